"""The encoder x decoder pairs the suite runs, as tiny configs with special ids set."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from encdec.configuration import EncoderDecoderConfig, config_class_for

SMALL = dict(vocab_size=99, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def part_kwargs(model_type: str, hidden: int = 32) -> dict[str, Any]:
    """Tiny part config: hidden 32 (or ``hidden``), 2 layers, vocab 99, dropout off."""
    if model_type == "gpt2":
        return dict(vocab_size=99, n_embd=hidden, n_layer=2, n_head=4, n_positions=64,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if model_type == "bart":
        return dict(vocab_size=99, d_model=hidden, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=37,
                    encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=37, max_position_embeddings=64,
                    dropout=0.0, scale_embedding=True)
    if model_type == "prophetnet":  # few buckets, so 7-token inputs reach the logarithmic buckets
        return dict(vocab_size=99, hidden_size=hidden, num_decoder_layers=2, num_encoder_layers=2,
                    num_decoder_attention_heads=4, num_encoder_attention_heads=4, decoder_ffn_dim=37, encoder_ffn_dim=37,
                    max_position_embeddings=64, ngram=3, num_buckets=6, relative_max_distance=12, dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0)
    if model_type == "rembert":
        return dict(SMALL, hidden_size=hidden, input_embedding_size=16, output_embedding_size=24, max_position_embeddings=64)
    extra = {"embedding_size": 16} if model_type == "electra" else {}
    # the alias / BertGeneration pairs also run activations other than the default through every backend
    # (and relative position scores: XLM-R encoder relative_key, CamemBERT decoder relative_key_query)
    extra.update({"bert-generation": {"hidden_act": "quick_gelu"},
                  "xlm-roberta": {"hidden_act": "mish", "position_embedding_type": "relative_key"},
                  "camembert": {"hidden_act": "gelu_10", "position_embedding_type": "relative_key_query"}
                  }.get(model_type, {}))
    return dict(SMALL, hidden_size=hidden, max_position_embeddings=64, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, **extra)


@dataclass(frozen=True)
class Pair:
    """``light`` pairs run the core checks only (every output and loss vs transformers in
    every backend, greedy ids in every backend (see ``NO_COMPILED_DECODE`` in test_generate.py) and beam ids in PyTorch vs transformers, one
    save/load round trip per native format), to keep the suite's time in bounds as families
    are added."""

    encoder: str
    decoder: str
    encoder_hidden: int = 32
    extra: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    light: bool = False

    @property
    def id(self) -> str:
        return self.name or f"{self.encoder}2{self.decoder}"

    def config(self) -> EncoderDecoderConfig:
        enc = config_class_for(self.encoder)(**part_kwargs(self.encoder, self.encoder_hidden))
        dec = config_class_for(self.decoder)(**part_kwargs(self.decoder))
        # GPT-2 has no pad id; the others keep theirs (BERT 0, RoBERTa/BART 1)
        pad = dec.pad_token_id if dec.pad_token_id is not None else 0
        return EncoderDecoderConfig.from_encoder_decoder_configs(
            enc, dec, decoder_start_token_id=2, pad_token_id=pad, eos_token_id=3, **self.extra)


PAIRS = [
    Pair("bert", "bert"),
    Pair("bert", "gpt2"),
    Pair("roberta", "roberta"),
    Pair("roberta", "gpt2"),
    Pair("electra", "gpt2"),
    Pair("bert", "bart", name="bert2bart-decoder"),
    Pair("bert", "bert", extra={"tie_encoder_decoder": True}, name="bert2bert-tied"),
    Pair("bert", "gpt2", encoder_hidden=48, name="bert48-2gpt2-32-proj"),
    Pair("bert", "prophetnet", light=True),
    Pair("rembert", "rembert", light=True),
    # the layout of Rothe et al.'s *_shared* checkpoints: BertGeneration parts, tie_encoder_decoder
    Pair("bert-generation", "bert-generation", extra={"tie_encoder_decoder": True}, name="bertgen2bertgen-shared",
         light=True),
    Pair("xlm-roberta", "camembert", light=True),  # aliases of RoBERTa's math, own model types
]
