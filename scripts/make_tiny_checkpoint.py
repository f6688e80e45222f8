"""Re-create the tiny bert2gpt2 checkpoint bundled in encdec/data (used by ``encdec compare``).

Weights come from the core's portable init (seeded), so the result is identical on every
machine:  python scripts/make_tiny_checkpoint.py [OUT_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

from encdec import BertConfig, EncoderDecoderConfig, GPT2Config, GenerationConfig
from encdec.init import init_weights
from encdec.pretrained import save_pretrained
from encdec.specs import encoder_decoder_spec

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "encdec" / "data" / "tiny-bert2gpt2"


def build(out: Path) -> None:
    encoder = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=128)
    decoder = GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                         bos_token_id=1, eos_token_id=2)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        encoder, decoder, decoder_start_token_id=1, pad_token_id=0, eos_token_id=2)
    weights = init_weights(encoder_decoder_spec(config), seed=2026, std=0.1, randomize_all=True)
    generation = GenerationConfig(decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, max_length=16)
    save_pretrained(out, config, weights, generation_config=generation)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
