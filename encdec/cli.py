"""The ``encdec`` command: convert, compare and inspect checkpoints, compare training runs.

Exit codes: 0 success; 1 a check failed (outputs differ beyond tolerance); 2 bad input
(missing file, unknown format, refused overwrite); 3 a needed backend is not installed.
Errors print as one line unless ``--debug``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_NO_BACKEND = 0, 1, 2, 3
FORMATS = ("safetensors", "pt-bin", "tf-h5", "flax-msgpack")
#: fp32 agreement we promise between backends and after conversion.
TOLERANCE = 1e-5
BUNDLED = Path(__file__).parent / "data" / "tiny-bert2gpt2"


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def _say(args: argparse.Namespace, *parts: Any) -> None:
    if not args.quiet:
        print(*parts)


def _backends(arg: str | None, need_installed: bool = True) -> list[str]:
    """Backends named by ``--backends`` (default: every installed one); unknown or empty
    names are bad input, and uninstalled ones too when ``need_installed``."""
    from encdec.registry import available_backends
    from encdec.runner import MODEL_CLASSES

    if arg is None:
        if not need_installed:
            return []
        found = available_backends()
        if not found:
            raise CliError("no backend installed: pip install 'encdec[torch]' (or tf, flax)", EXIT_NO_BACKEND)
        return found
    wanted = [b.strip() for b in arg.split(",") if b.strip()]
    if not wanted:
        raise CliError(f"--backends {arg!r} names no backend; give a comma list of {', '.join(MODEL_CLASSES)}")
    for b in wanted:
        if b not in MODEL_CLASSES:
            raise CliError(f"--backends: unknown backend {b!r}; choose from {', '.join(MODEL_CLASSES)}")
        if need_installed and b not in available_backends():
            raise CliError(f"--backends: {b} is not installed (pip install 'encdec[{b}]')", EXIT_NO_BACKEND)
    return wanted


def _load(source: str, hub: dict[str, Any]):
    from encdec.pretrained import load_pretrained

    config, weights, generation_config, _ = load_pretrained(source, **hub)
    return config, weights, generation_config


def _hub_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "revision", None):
        out["revision"] = args.revision
    if getattr(args, "cache_dir", None):
        out["cache_dir"] = args.cache_dir
    if getattr(args, "local_files_only", False):
        out["local_files_only"] = True
    return out


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


# --- convert --------------------------------------------------------------------------------
def cmd_convert(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from encdec.pretrained import save_pretrained
    from encdec.runner import Runner, sample_inputs

    dst = Path(args.dst)
    if dst.exists() and any(dst.iterdir()) and not args.force:
        raise CliError(f"destination {dst} is not empty; pass --force to overwrite it")
    backends = _backends(args.backends, need_installed=not args.no_verify)
    if args.no_verify:
        backends = []
    # one step per stage; tqdm hides the bar when stderr is not a terminal (disable=None)
    bar = tqdm(total=2 + len(backends), desc="convert", unit="step", disable=True if args.quiet else None)
    bar.set_postfix_str("read")
    config, weights, generation_config = _load(args.src, _hub_kwargs(args))
    if args.dtype:
        weights = {k: v.astype(args.dtype) if v.dtype.kind == "f" else v for k, v in weights.items()}
    bar.update()
    bar.set_postfix_str(f"write {args.to}")
    save_pretrained(dst, config, weights, generation_config=generation_config, format=args.to)
    bar.update()
    _say(args, f"wrote {args.to} checkpoint to {dst}")
    inputs = sample_inputs(config, labels=False)
    worst = 0.0
    for backend in backends:
        bar.set_postfix_str(f"verify {backend}")
        src = Runner.from_weights(backend, config, weights).forward(**inputs)["logits"]
        out = Runner.from_pretrained(backend, str(dst)).forward(**inputs)["logits"]
        delta = _max_abs(src, out)
        worst = max(worst, delta)
        bar.update()
        _say(args, f"verify [{backend}] max |Δlogits| source vs converted: {delta:.3g}")
    bar.close()
    return EXIT_OK if worst <= TOLERANCE else EXIT_MISMATCH


# --- compare --------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    from encdec.runner import Runner, sample_inputs

    source = args.checkpoint or str(BUNDLED)
    for option in ("batch", "max_new_tokens"):
        if getattr(args, option) < 1:
            raise CliError(f"--{option.replace('_', '-')} must be a positive integer, got {getattr(args, option)}")
    if not 0 <= args.seed < 2**32:
        raise CliError(f"--seed must be in [0, 2**32), got {args.seed}")
    backends = _backends(args.backends)
    config, weights, _ = _load(source, _hub_kwargs(args))
    inputs = sample_inputs(config, batch=args.batch, seed=args.seed)
    gen_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    rows = {}
    for backend in backends:
        runner = Runner.from_weights(backend, config, weights)
        out, fwd_ms = runner.timed("forward", **inputs)
        ids, gen_ms = runner.timed("generate", max_new_tokens=args.max_new_tokens, **gen_inputs)
        rows[backend] = dict(logits=out["logits"], loss=float(out["loss"]), ids=ids, fwd_ms=fwd_ms, gen_ms=gen_ms)

    names = list(rows)
    head = ["backend", *[f"Δ vs {n}" for n in names], "loss", "greedy ids =", "forward ms", "generate ms"]
    lines = [head]
    worst = 0.0
    for a in names:
        deltas = []
        for b in names:
            d = _max_abs(rows[a]["logits"], rows[b]["logits"])
            worst = max(worst, d)
            deltas.append("-" if a == b else f"{d:.2e}")
        same = all(np.array_equal(rows[a]["ids"], rows[b]["ids"]) for b in names)
        lines.append([a, *deltas, f"{rows[a]['loss']:.6f}", "yes" if same else "no",
                      f"{rows[a]['fwd_ms']:.1f}", f"{rows[a]['gen_ms']:.1f}"])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    _say(args, f"checkpoint: {source}")
    _say(args, f"inputs: batch {args.batch}, padded; greedy {args.max_new_tokens} new tokens")
    for r in lines:
        _say(args, "  ".join(c.ljust(w) for c, w in zip(r, widths)))
    _say(args, f"largest |Δlogits| between backends: {worst:.2e} (tolerance {TOLERANCE:g})")
    if args.plot:
        _plot(rows, args.plot)
        _say(args, f"wrote {args.plot}")
    ids_equal = all(np.array_equal(rows[names[0]]["ids"], rows[n]["ids"]) for n in names)
    return EXIT_OK if worst <= TOLERANCE and ids_equal else EXIT_MISMATCH


def _plot(rows: dict[str, dict[str, Any]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'encdec[plot]'") from None
    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = np.abs(rows[a]["logits"].astype(np.float64) - rows[b]["logits"].astype(np.float64))
            per_pos = diff.max(axis=(0, 2))
            ax.semilogy(np.arange(len(per_pos)), np.maximum(per_pos, 1e-12), marker="o", label=f"{a} vs {b}")
    ax.axhline(TOLERANCE, color="grey", linestyle="--", label="tolerance")
    ax.set_xlabel("decoder position")
    ax.set_ylabel("max |Δlogits|")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


# --- train-compare --------------------------------------------------------------------------
def cmd_train_compare(args: argparse.Namespace) -> int:
    from encdec.runner import Runner
    from encdec.training import AdamWSettings, comparison_batches, curve_differences, without_dropout, write_curves_csv

    for option in ("steps", "batch"):
        if getattr(args, option) < 1:
            raise CliError(f"--{option} must be a positive integer, got {getattr(args, option)}")
    if not 0 <= args.seed < 2**31:
        raise CliError(f"--seed must be in [0, 2**31), got {args.seed}")
    try:
        settings = AdamWSettings(args.lr, args.beta1, args.beta2, args.eps, args.weight_decay)
    except ValueError as err:
        raise CliError(str(err)) from None
    backends = _backends(args.backends)
    source = args.checkpoint or str(BUNDLED)
    config, weights, _ = _load(source, _hub_kwargs(args))
    if args.dropout == "off":
        config = without_dropout(config)
    batches = comparison_batches(config, args.steps, args.batch, args.seed)
    curves = {}
    for backend in backends:
        runner = Runner.from_weights(backend, config, weights)
        curves[backend] = runner.train_adamw(batches, settings, seed=args.seed)
    diffs = curve_differences(curves)
    write_curves_csv(args.csv, curves, diffs)
    _say(args, f"checkpoint: {source}; dropout {args.dropout}; {args.steps} AdamW steps (lr {settings.learning_rate:g}, "
               f"betas ({settings.beta1:g}, {settings.beta2:g}), eps {settings.eps:g}, weight decay "
               f"{settings.weight_decay:g}) on batches of {args.batch}, seed {args.seed}")
    width = max(len(b) for b in backends) + 6
    _say(args, "step  " + "".join(f"{'loss ' + b:<{width}}" for b in backends) + "max |Δloss|")
    for step, diff in enumerate(diffs):
        _say(args, f"{step + 1:<6d}" + "".join(f"{curves[b][step]:<{width}.6f}" for b in backends) + f"{diff:.2e}")
    worst = max(diffs)
    _say(args, f"largest loss difference: {worst:.2e} at step {int(np.argmax(diffs)) + 1} (tolerance {args.tolerance:g}"
               + (", not applied: dropout draws differ per framework)" if args.dropout == "on" else ")"))
    if len(backends) > 2:
        pairs = [(a, b) for i, a in enumerate(backends) for b in backends[i + 1:]]
        _say(args, "largest per pair: " + ", ".join(
            f"{a}-{b} {max(curve_differences({a: curves[a], b: curves[b]})):.2e}" for a, b in pairs))
    _say(args, f"wrote {args.csv}")
    if args.plot:
        try:
            _plot_curves(curves, diffs, args.plot)
            _say(args, f"wrote {args.plot}")
        except ImportError:
            _say(args, f"matplotlib is not installed: no {args.plot} written (pip install 'encdec[plot]'); the CSV has the curves")
    if args.dropout == "on":
        return EXIT_OK
    return EXIT_OK if worst <= args.tolerance else EXIT_MISMATCH


def _plot_curves(curves: dict[str, list[float]], diffs: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(diffs) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for name, losses in curves.items():
        top.plot(steps, losses, marker="o", markersize=3, label=name)
    top.set_ylabel("training loss")
    top.legend()
    bottom.semilogy(steps, np.maximum(diffs, 1e-12), marker="o", markersize=3, color="black")
    bottom.set_xlabel("step")
    bottom.set_ylabel("max |Δloss| between backends")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- info -----------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from encdec.pretrained import checkpoint_formats
    from encdec.registry import available_backends
    from encdec.specs import encoder_decoder_spec

    config, weights, _ = _load(args.checkpoint, _hub_kwargs(args))
    spec = encoder_decoder_spec(config)
    dtypes = sorted({str(v.dtype) for v in weights.values()})
    _say(args, f"checkpoint:    {args.checkpoint}")
    _say(args, f"architecture:  {config.encoder.model_type} encoder -> {config.decoder.model_type} decoder"
               + (" (with enc_to_dec_proj)" if "enc_to_dec_proj.weight" in spec else ""))
    _say(args, f"parameters:    {spec.num_parameters():,}")
    _say(args, f"dtype:         {', '.join(dtypes)}")
    _say(args, f"formats:       {', '.join(checkpoint_formats(args.checkpoint, **_hub_kwargs(args)))}")
    _say(args, f"loads in:      {', '.join(available_backends()) or 'no installed backend'}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from encdec import __version__

    parser = argparse.ArgumentParser(prog="encdec", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"encdec {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="print nothing but errors")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    common.add_argument("--cache-dir", help="Hub cache folder")
    common.add_argument("--local-files-only", action="store_true", help="never download")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", parents=[common], help="write a checkpoint in another format and verify it")
    p.add_argument("src", help="local folder or Hub repo id")
    p.add_argument("dst", help="output folder")
    p.add_argument("--to", choices=FORMATS, default="safetensors")
    p.add_argument("--dtype", choices=("float32", "float16"), help="cast floating weights")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty DST")
    p.add_argument("--backends", help="backends used to verify (default: all installed)")
    p.add_argument("--no-verify", action="store_true", help="skip the logits check")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("compare", parents=[common], help="run one checkpoint through every backend")
    p.add_argument("checkpoint", nargs="?", help="folder or Hub id (default: the bundled tiny bert2gpt2)")
    p.add_argument("--backends", help="comma list of torch,tf,flax (default: all installed)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="FILE.png", help="per-position max |Δlogits| figure")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("train-compare", parents=[common],
                       help="train one checkpoint in every backend with AdamW and compare the loss curves")
    p.add_argument("checkpoint", nargs="?", help="folder or Hub id (default: the bundled tiny bert2gpt2)")
    p.add_argument("--backends", help="comma list of torch,tf,flax (default: all installed)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="batches and dropout draws")
    p.add_argument("--dropout", choices=("off", "on"), default="off",
                   help="off: every dropout probability set to 0 (curves must agree); on: the config's dropout")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest loss difference accepted with --dropout off (exit 1 above it)")
    p.add_argument("--csv", default="train_compare.csv", help="loss curves, one row per step")
    p.add_argument("--plot", default="train_compare.png", metavar="FILE.png",
                   help="loss curves and their difference (needs matplotlib; '' for none)")
    p.set_defaults(func=cmd_train_compare)

    p = sub.add_parser("info", parents=[common], help="describe a checkpoint")
    p.add_argument("checkpoint")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:  # huggingface_hub's download bars too
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    try:
        return args.func(args)
    except Exception as err:  # one clear line unless --debug
        if args.debug:
            raise
        code = err.code if isinstance(err, CliError) else (EXIT_NO_BACKEND if isinstance(err, ImportError) else EXIT_BAD_INPUT)
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"encdec {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
