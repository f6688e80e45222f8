"""The adapter configurations and (pair, config) cases shared by the conformance suite and
the backends' own adapter tests (no ``adapters`` import: the oracle is needed only where used)."""
from __future__ import annotations

from encdec.adapters import LoRAConfig, SeqBnConfig

#: name -> (config class, keyword arguments shared by ours and AdapterHub's)
CONFIGS = {
    "seqbn": (SeqBnConfig, {}),
    "seqbn-mh-leave0": (SeqBnConfig, dict(mh_adapter=True, leave_out=[0], reduction_factor=8, non_linearity="gelu")),
    "seqbn-noln-before": (SeqBnConfig, dict(mh_adapter=True, original_ln_before=False, residual_before_ln=False)),
    "seqbn-post-add": (SeqBnConfig, dict(residual_before_ln="post_add", original_ln_after=False)),
    "lora": (LoRAConfig, dict(r=4, alpha=8)),
    "lora-all-leave1": (LoRAConfig, dict(r=2, alpha=3, attn_matrices=["q", "k", "v"], intermediate_lora=True,
                                         output_lora=True, leave_out=[1])),
    "lora-mlp-leave0": (LoRAConfig, dict(r=2, alpha=4, selfattn_lora=False, intermediate_lora=True, output_lora=True,
                                         leave_out=[0])),
}
#: GPT-2 sites have no LayerNorm (no post_add); its LoRA covers the fused self-attention c_attn
#: (q/k/v groups) and the MLP
CASES = [("bert2bert", k) for k in CONFIGS if k != "lora-mlp-leave0"] + [
    ("bert2gpt2", k) for k in ("seqbn", "seqbn-mh-leave0", "seqbn-noln-before", "lora", "lora-all-leave1",
                               "lora-mlp-leave0")] + [
    ("roberta2roberta", "seqbn-mh-leave0"), ("roberta2roberta", "lora-all-leave1"),
    ("electra2gpt2", "seqbn-mh-leave0"), ("electra2gpt2", "lora-all-leave1"),
    ("bert2bart-decoder", "seqbn-mh-leave0"), ("bert2bart-decoder", "seqbn-post-add"),
    ("bert2bart-decoder", "lora-all-leave1")]
TOL = 1e-5  # fp32, same math in a different order


def ours_config(key: str):
    cls, kwargs = CONFIGS[key]
    return cls(**kwargs)
