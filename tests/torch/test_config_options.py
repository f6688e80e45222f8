"""Config options of issue 13 against transformers 4.57 (eager attention) in PyTorch: GPT-2's
attention scaling flags and relative position scores (encoder and decoder), forward logits and
cached greedy decoding.  The weights those options read are scaled up so an error shows."""
import numpy as np
import pytest
import torch

from encdec import BertConfig, BertGenerationConfig, CamembertConfig, EncoderDecoderConfig, GPT2Config, XLMRobertaConfig
from encdec.init import init_weights
from encdec.runner import Runner, sample_inputs
from encdec.specs import encoder_decoder_spec

transformers = pytest.importorskip("transformers")

BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
GPT2 = dict(vocab_size=99, n_embd=32, n_layer=3, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)

CASES = {
    "gpt2-unscaled": (BertConfig(**BERT), GPT2Config(**GPT2, scale_attn_weights=False), ("c_attn", "q_attn")),
    "gpt2-inverse-layer-upcast": (BertConfig(**BERT), GPT2Config(**GPT2, scale_attn_by_inverse_layer_idx=True,
                                                                 reorder_and_upcast_attn=True), ("c_attn", "q_attn")),
    "xlmr-relative_key-2-camembert-relative_key_query": (
        XLMRobertaConfig(**BERT, position_embedding_type="relative_key"),
        CamembertConfig(**BERT, position_embedding_type="relative_key_query"), ("distance_embedding",)),
    "bertgen-relative_key_query-2-bert-relative_key": (
        BertGenerationConfig(**BERT, position_embedding_type="relative_key_query"),
        BertConfig(**BERT, position_embedding_type="relative_key"), ("distance_embedding",)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_option_matches_transformers(name):
    enc, dec, amplify = CASES[name]
    config = EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, decoder_start_token_id=2, eos_token_id=3,
                                                               pad_token_id=dec.pad_token_id or 0)
    weights = init_weights(encoder_decoder_spec(config), seed=1, randomize_all=True)
    weights = {k: v * 10 if any(a in k for a in amplify) else v for k, v in weights.items()}
    hc = transformers.EncoderDecoderConfig.from_dict(config.to_dict())
    for part in (hc, hc.encoder, hc.decoder):
        part._attn_implementation = "eager"
    hf = transformers.EncoderDecoderModel(hc).eval()
    missing, unexpected = hf.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    assert not unexpected and not [m for m in missing if not m.endswith("attn.bias")]
    x = sample_inputs(config, labels=True)
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in x.items()})
    ours = Runner.from_weights("torch", config, weights).forward(**x)
    assert np.abs(ours["logits"] - ref.logits.numpy()).max() <= 1e-5
    assert abs(float(ours["loss"]) - float(ref.loss)) <= 1e-5
    g = sample_inputs(config, labels=False)
    with torch.no_grad():
        ids = hf.generate(torch.from_numpy(g["input_ids"]), attention_mask=torch.from_numpy(g["attention_mask"]),
                          max_new_tokens=5).numpy()
    np.testing.assert_array_equal(
        Runner.from_weights("torch", config, weights).generate(g["input_ids"], attention_mask=g["attention_mask"],
                                                               max_new_tokens=5), ids)
