"""Time encdec_torch adapters against transformers 4.57 + the AdapterHub ``adapters`` library
(1.3) in one process.

Workload: the bench_torch.py model (bert-base encoder + gpt2 decoder, random fp32 weights,
batch 4, source 128, target 64) with one active adapter -- LoRA (r=8 on q/v, GPT-2's fused
``c_attn`` included) or a sequential bottleneck (``SeqBnConfig()``) -- and the same adapter
weights on both sides.  Measures the eval forward and one training step of the adapter alone
(forward, backward, Adam), and prints each ratio ours / theirs (below 1: we are faster), plus
each side's overhead against its own adapter-free forward.

    python benchmarks/bench_adapters.py [--repeats 3] [--threads N]
"""
from __future__ import annotations

import torch

from bench_torch import BATCH, TARGET, parser_for, setup, timed

from encdec.adapters import LoRAConfig, SeqBnConfig


def main() -> None:
    import adapters

    args = parser_for(__doc__).parse_args()
    ours, theirs, ids, mask = setup(args)
    adapters.init(theirs)
    labels = torch.randint(1000, 50000, (BATCH, TARGET))

    def forward(model):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, labels=labels).logits

    base_ours, base_theirs = timed(lambda: forward(ours), lambda: forward(theirs), args.repeats)
    print(f"{'workload':<28}{'ours s':>10}{'theirs s':>10}{'ratio':>8}")
    print(f"{'forward, no adapter':<28}{base_ours:>10.3f}{base_theirs:>10.3f}{base_ours / base_theirs:>8.2f}")
    for name, ours_cfg, hub_cfg in (("lora", LoRAConfig(r=8, alpha=16), adapters.LoRAConfig(r=8, alpha=16)),
                                    ("bottleneck", SeqBnConfig(), adapters.SeqBnConfig())):
        ours.add_adapter(name, ours_cfg, seed=1)
        theirs.add_adapter(name, config=hub_cfg)
        state = {k: torch.from_numpy(v.copy()) for k, v in ours.adapter_state(name).items()}
        assert not theirs.load_state_dict(state, strict=False).unexpected_keys
        ours.train_adapter(name)
        theirs.train_adapter(name)
        ours.eval(), theirs.eval()
        diff = float((forward(ours) - forward(theirs)).abs().max())
        fwd = timed(lambda: forward(ours), lambda: forward(theirs), args.repeats)
        optimizers = {id(m): torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                      for m in (ours, theirs)}

        def step(model):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizers[id(model)].zero_grad()
            loss.backward()
            optimizers[id(model)].step()

        train = timed(lambda: step(ours), lambda: step(theirs), args.repeats)
        print(f"{name + ' forward':<28}{fwd[0]:>10.3f}{fwd[1]:>10.3f}{fwd[0] / fwd[1]:>8.2f}"
              f"   overhead vs no adapter: ours {fwd[0] / base_ours:.2f}, theirs {fwd[1] / base_theirs:.2f}"
              f"   max |Δlogits| {diff:.1e}")
        print(f"{name + ' train step':<28}{train[0]:>10.3f}{train[1]:>10.3f}{train[0] / train[1]:>8.2f}")
        ours.delete_adapter(name)
        theirs.delete_adapter(name)


if __name__ == "__main__":
    main()
