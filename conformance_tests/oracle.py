"""transformers 4.57 as the reference: PyTorch and Flax in-process, TensorFlow in a
subprocess (its TF classes need tf-keras, ``TF_USE_LEGACY_KERAS=1``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Mapping

import numpy as np

from encdec.configuration import EncoderDecoderConfig
from encdec.registry import family

os.environ.setdefault("USE_TF", "0")


def _hf_config(config: EncoderDecoderConfig):
    import transformers

    hf = transformers.EncoderDecoderConfig.from_dict(json.loads(config.to_json_string()))
    # eager attention: the SDPA path returns no attention weights for some parts
    for part in (hf, hf.encoder, hf.decoder):
        part._attn_implementation = "eager"
    return hf


def torch_model(config: EncoderDecoderConfig, weights: Mapping[str, np.ndarray]):
    """transformers' ``EncoderDecoderModel`` holding ``weights`` (eval mode)."""
    import torch
    import transformers

    model = transformers.EncoderDecoderModel(config=_hf_config(config))
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return model.eval()


def torch_forward(model, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()},
                    output_hidden_states=True, output_attentions=True)
    return {k: _np(v) for k, v in out.items() if k != "past_key_values"}


def torch_generate(model, input_ids: np.ndarray, attention_mask: np.ndarray, **kwargs: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model.generate(torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask), **kwargs)
    return out.numpy()


def flax_forward(config: EncoderDecoderConfig, weights: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Logits of transformers' ``FlaxEncoderDecoderModel`` on decoder_input_ids."""
    import torch
    import transformers
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

    model = transformers.FlaxEncoderDecoderModel(_hf_config(config), _do_init=True)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    model.params = convert_pytorch_state_dict_to_flax(state, model)
    inputs = dict(inputs)
    # FlaxEncoderDecoderModel passes arange positions to its parts; give RoBERTa parts the
    # padding-offset positions their PyTorch twins compute, so all oracles agree.
    if family(config.encoder.model_type) == "roberta":
        inputs["position_ids"] = roberta_positions(inputs["input_ids"], config.encoder.pad_token_id)
    if family(config.decoder.model_type) == "roberta":
        inputs["decoder_position_ids"] = roberta_positions(inputs["decoder_input_ids"], config.decoder.pad_token_id)
    out = model(**inputs)
    return np.asarray(out.logits)


def roberta_positions(ids: np.ndarray, pad: int) -> np.ndarray:
    """RoBERTa's position ids: count non-pad tokens from ``pad + 1``; pads sit at ``pad``."""
    mask = (ids != pad).astype(np.int64)
    return np.cumsum(mask, axis=1) * mask + pad


_TF_SCRIPT = r"""
import os, sys, numpy as np
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import transformers
for folder in sys.argv[1:]:
    data = dict(np.load(os.path.join(folder, "inputs.npz")))
    model = transformers.TFEncoderDecoderModel.from_pretrained(folder, from_pt=True)
    out = model(**data)
    np.save(os.path.join(folder, "logits.npy"), out.logits.numpy())
"""


def tf_forward_many(jobs: list[tuple[EncoderDecoderConfig, Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]
                    ) -> list[np.ndarray]:
    """Logits of transformers' ``TFEncoderDecoderModel`` for each ``(config, weights, inputs)``,
    all in one subprocess (one TensorFlow start)."""
    with tempfile.TemporaryDirectory() as root:
        folders = []
        for i, (config, weights, inputs) in enumerate(jobs):
            folder = os.path.join(root, str(i))
            torch_model(config, weights).save_pretrained(folder, safe_serialization=False)
            np.savez(os.path.join(folder, "inputs.npz"), **{k: v.astype(np.int32) for k, v in inputs.items()})
            folders.append(folder)
        # USE_TF/USE_TORCH unset ("auto"): the oracle needs TF, and torch for from_pt
        env = {k: v for k, v in os.environ.items() if k not in ("USE_TF", "USE_TORCH")}
        env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run([sys.executable, "-c", _TF_SCRIPT, *folders], env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"transformers TF oracle failed:\n{proc.stderr[-3000:]}")
        return [np.load(os.path.join(folder, "logits.npy")) for folder in folders]


def _np(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple(_np(v) for v in x)
    return x.detach().numpy()
