"""Tiny configs shared by the core tests (hidden 32, 2 layers, vocab 99)."""
from __future__ import annotations

SMALL_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def part_kwargs(model_type: str, hidden: int = 32) -> dict:
    if model_type == "gpt2":
        return dict(vocab_size=99, n_embd=hidden, n_layer=2, n_head=4, n_positions=64)
    if model_type == "bart":
        return dict(
            vocab_size=99, d_model=hidden, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=37,
            encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=37, max_position_embeddings=64,
        )
    if model_type == "prophetnet":
        return dict(vocab_size=99, hidden_size=hidden, num_decoder_layers=2, num_encoder_layers=2, num_decoder_attention_heads=4,
                    num_encoder_attention_heads=4, decoder_ffn_dim=37, encoder_ffn_dim=37, max_position_embeddings=64, ngram=3)
    if model_type == "rembert":
        return dict(SMALL_BERT, hidden_size=hidden, input_embedding_size=16, output_embedding_size=24)
    if model_type == "electra":
        return dict(SMALL_BERT, hidden_size=hidden, embedding_size=16)
    return dict(SMALL_BERT, hidden_size=hidden)


#: (encoder type, decoder type, encoder hidden, extra composite kwargs)
PAIRS = [
    ("bert", "bert", 32, {}),
    ("bert", "gpt2", 32, {}),
    ("roberta", "roberta", 32, {}),
    ("electra", "gpt2", 32, {}),
    ("bert", "bart", 32, {}),
    ("bert", "gpt2", 48, {}),
    ("bert", "bert", 32, {"tie_encoder_decoder": True}),
    ("bert", "prophetnet", 32, {}),
    ("bert", "prophetnet", 48, {}),
    ("rembert", "rembert", 32, {}),
    ("rembert", "rembert", 32, {"tie_encoder_decoder": True}),
    ("bert-generation", "bert-generation", 32, {}),
    ("bert-generation", "bert-generation", 32, {"tie_encoder_decoder": True}),
    ("bert-generation", "gpt2", 48, {}),
    ("xlm-roberta", "camembert", 32, {}),
    ("camembert", "xlm-roberta", 32, {}),
]


def pair_id(pair) -> str:
    enc, dec, hidden, extra = pair
    return f"{enc}2{dec}" + (f"-h{hidden}" if hidden != 32 else "") + ("-tied" if extra else "")


def tiny_composite(enc: str = "bert", dec: str = "gpt2", **kwargs):
    """A tiny ``EncoderDecoderConfig`` (start and pad id 0, unless given)."""
    from encdec.configuration import AutoConfig, EncoderDecoderConfig

    kwargs = {"decoder_start_token_id": 0, "pad_token_id": 0, **kwargs}
    return EncoderDecoderConfig.from_encoder_decoder_configs(
        AutoConfig.for_model(enc, **part_kwargs(enc)), AutoConfig.for_model(dec, **part_kwargs(dec)), **kwargs)
