"""The optax example of docs/flax_training.md runs and two optimizer steps reduce the loss; the
Flax side of `encdec train-compare` matches torch."""
import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "flax_training.md"


def test_optax_example_reduces_loss():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert namespace["loss_after"] < namespace["loss_before"] - 0.05


def test_train_adamw_matches_torch():
    """``encdec train-compare``'s Flax side (jitted optax.adamw step) against torch.optim.AdamW:
    same 1-layer model, batches and settings, dropout off -> the same losses (fp32, 1e-5)."""
    import pytest

    pytest.importorskip("torch")
    from encdec import BertConfig, EncoderDecoderConfig, GPT2Config
    from encdec.init import init_weights
    from encdec.runner import Runner
    from encdec.specs import encoder_decoder_spec
    from encdec.training import AdamWSettings, comparison_batches, without_dropout

    config = without_dropout(EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37),
        GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4), decoder_start_token_id=3, pad_token_id=0))
    assert config.encoder.hidden_dropout_prob == 0.0 and config.decoder.resid_pdrop == 0.0
    weights = init_weights(encoder_decoder_spec(config), seed=0)
    batches, settings = comparison_batches(config, 3, 2, seed=0), AdamWSettings(learning_rate=1e-2)
    flax = Runner.from_weights("flax", config, weights).train_adamw(batches, settings)
    torch = Runner.from_weights("torch", config, weights).train_adamw(batches, settings)
    assert max(abs(a - b) for a, b in zip(flax, torch)) < 1e-5, (flax, torch)
    assert abs(flax[2] - flax[0]) > 1e-3  # the steps moved the weights
