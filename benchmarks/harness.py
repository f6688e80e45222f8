"""The one benchmark harness behind ``bench_torch.py``, ``bench_tf.py`` and ``bench_flax.py``.

Workload (issue 17): bert-base encoder + gpt2 decoder with cross-attention, random fp32
weights, batch 4, source 128, target 64, 32 new tokens (greedy and beam 4), and the load of
the ~1 GB checkpoint.  Each backend script supplies two *sides* -- ours and transformers
4.57's class of the same framework -- and the harness:

* times ``from_pretrained`` + the first forward in fresh processes (imports excluded;
  interleaved repetitions, median) and each workload's first call (its compile time, for the XLA sides: first call minus the steady median);
* runs the steady workloads in interleaved repetitions (ours, theirs, ours, theirs, ...),
  so that load from other processes on the machine hits both sides alike, and keeps medians;
* measures the machine's bounds -- numpy copy bandwidth and one large matmul in the
  side's framework -- and prints each figure beside its lower bound (``ours / bound``);
* checks that greedy and beam ids agree between the sides and reports max |Δlogits| of the forward.

A side may live in another process (transformers' TF classes need tf-keras): a
:class:`WorkerSide` drives the same protocol over stdin/stdout JSON lines (:func:`serve`).

Figures taken on a shared machine are noisy: read the ratios, not the seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config
from encdec.init import init_weights
from encdec.pretrained import save_pretrained
from encdec.specs import EMBEDDING, encoder_decoder_spec

#: Workloads every backend runs, in table order.
WORKLOADS = ("forward", "greedy", "beam")
START, PAD = 0, 0


@dataclass(frozen=True)
class Shape:
    batch: int = 4
    source: int = 128
    target: int = 64
    new_tokens: int = 32
    beams: int = 4


def workload_config(quick: bool) -> EncoderDecoderConfig:
    """bert-base + gpt2 (fp32, random weights); ``quick``: a tiny pair of the same kinds."""
    if quick:
        enc = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
        dec = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=98, eos_token_id=98)
    else:
        enc, dec = BertConfig(), GPT2Config()
    config = EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id, config.pad_token_id = START, PAD
    return config


def workload_shape(quick: bool) -> Shape:
    return Shape(batch=2, source=16, target=8, new_tokens=4, beams=2) if quick else Shape()


def workload_inputs(config: EncoderDecoderConfig, shape: Shape) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(1, config.encoder.vocab_size, (shape.batch, shape.source)).astype(np.int32),
        "attention_mask": np.ones((shape.batch, shape.source), np.int32),
        "decoder_input_ids": rng.integers(1, config.decoder.vocab_size, (shape.batch, shape.target)).astype(np.int32),
    }


def generate_kwargs(shape: Shape, beams: int = 1) -> dict[str, Any]:
    """Exactly ``new_tokens`` new tokens (``min_length`` counts the start token, and every
    implementation, transformers' Flax and TF ones included, knows it), greedy or beam."""
    return dict(max_new_tokens=shape.new_tokens, min_length=shape.new_tokens + 1, num_beams=beams,
                decoder_start_token_id=START, pad_token_id=PAD)


def make_checkpoint(directory: str, config: EncoderDecoderConfig) -> int:
    """Write the workload's checkpoint (``model.safetensors``, canonical names); returns its bytes."""
    save_pretrained(directory, config, init_weights(encoder_decoder_spec(config), seed=0))
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))


# --- sides ---------------------------------------------------------------------------------
class Side:
    """One implementation in one framework.  Subclasses set ``label`` and implement
    :meth:`load` (``from_pretrained`` of ``path``, kept as the side's model), :meth:`workload`
    (a callable running ``name`` once and returning a numpy array, blocking until done) and
    :meth:`matmul` (one ``[n, n] @ [n, n]`` in the framework, blocking)."""

    label = "?"
    #: the workload timed with the load: a plain call, not a compiled program (whose
    #: compile time the "compile" rows report)
    first_forward = "forward"

    def __init__(self, config: EncoderDecoderConfig, shape: Shape, dtype: str = "float32") -> None:
        self.config, self.shape, self.dtype = config, shape, dtype
        self.inputs = workload_inputs(config, shape)

    def load(self, path: str) -> None:
        raise NotImplementedError

    def workload(self, name: str) -> Callable[[], np.ndarray]:
        raise NotImplementedError

    def matmul(self, n: int, dtype: str) -> Callable[[], Any]:
        raise NotImplementedError

    def op(self, request: dict[str, Any]) -> dict[str, Any]:
        """The protocol (also spoken over a pipe by :class:`WorkerSide`): ``load`` (load +
        first forward, seconds), ``run`` (one workload call, seconds; ``save``: write its
        output to that ``.npy`` path) and ``matmul`` (best seconds of one matmul)."""
        kind = request["op"]
        if kind == "load":
            start = time.perf_counter()
            self.load(request["path"])
            self.workload(self.first_forward)()
            return {"s": time.perf_counter() - start}
        if kind == "run":
            fn = self.workload(request["name"])
            start = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - start
            if request.get("save"):
                np.save(request["save"], np.asarray(out))
            return {"s": seconds}
        if kind == "matmul":
            fn = self.matmul(request["n"], request.get("dtype", "float32"))
            fn()
            return {"s": min(_seconds(fn) for _ in range(request.get("repeats", 3)))}
        raise ValueError(f"unknown op {kind!r}")

    def close(self) -> None:
        pass


class WorkerSide(Side):
    """A side served by another Python process (``argv`` runs :func:`serve`), with ``env``."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str]) -> None:
        self.label = label
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def op(self, request: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker exited (code {self.proc.wait()}); see its stderr above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.label} worker: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def serve(side: Side) -> None:
    """Worker loop: one JSON request per stdin line, one JSON reply per stdout line (the
    real stdout is kept for replies; anything the frameworks print goes to stderr)."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        try:
            reply = side.op(json.loads(line))
        except Exception as exc:  # reported to the driving process, which raises
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")


def interleaved(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median seconds of ``ours()`` and ``theirs()`` run alternately, after one warm-up each."""
    ours(), theirs()
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        a.append(_seconds(ours))
        b.append(_seconds(theirs))
    return statistics.median(a), statistics.median(b)


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- bounds --------------------------------------------------------------------------------
def copy_bandwidth(nbytes: int, repeats: int = 3) -> float:
    """Bytes per second of a numpy copy (read + write counted) of ``nbytes``."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = min(_seconds(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * src.nbytes / best


@dataclass
class Bounds:
    """Lower bounds (seconds) of each workload on this machine, from weight bytes over the
    copy bandwidth and matmul FLOPs over one large matmul's rate (both approximations:
    attention FLOPs and activation traffic are left out, so the bounds are optimistic)."""

    bandwidth: float  # bytes / s
    flops: float  # FLOP / s of the framework's large matmul
    seconds: dict[str, float]


def workload_bounds(config: EncoderDecoderConfig, shape: Shape, checkpoint_bytes: int, bandwidth: float, flops: float,
                    itemsize: int = 4) -> Bounds:
    spec = encoder_decoder_spec(config)
    matmul = {"encoder": 0, "decoder": 0}  # parameters that multiply every token (not embedding gathers)
    step_bytes = 0  # what one decode step must read: the decoder's weights and the LM head
    for p in spec.untied:
        n = int(np.prod(p.shape))
        part = "encoder" if p.name.startswith("encoder.") else "decoder"
        if p.kind != EMBEDDING:
            matmul[part] += n
        if part == "decoder" and (p.kind != EMBEDDING or "wte" in p.name or "word_embeddings" in p.name):
            step_bytes += n * itemsize
    vocab_h = config.decoder.vocab_size * config.decoder.hidden_size  # the LM head multiplies too
    encode = 2 * matmul["encoder"] * shape.batch * shape.source / flops
    decode_flops = 2 * (matmul["decoder"] + vocab_h) * shape.batch * shape.target / flops
    forward = max(encode + decode_flops, spec.num_parameters() * itemsize / bandwidth)
    step = step_bytes / bandwidth
    seconds = {
        "forward": forward,
        "greedy": encode + shape.new_tokens * step,
        "beam": encode + shape.new_tokens * step,  # one encode; 4 beams per row share each weight read
        "load": checkpoint_bytes / bandwidth + forward,
    }
    return Bounds(bandwidth, flops, seconds)


# --- the run -------------------------------------------------------------------------------
def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=doc)
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed calls per workload and side (median kept)")
    p.add_argument("--quick", action="store_true", help="tiny model, one repetition: a smoke test, not a measurement")
    p.add_argument("--skip-hf", action="store_true", help="time ours only")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="our weights and activations (transformers stays fp32: the rows compare against its fp32)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--load-probe", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    p.add_argument("--load-path", help=argparse.SUPPRESS)
    return p


def run(args: argparse.Namespace, backend: str, ours: Callable[..., Side], theirs: Optional[Callable[..., Side]],
        extra_workloads: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load both sides, check their ids agree, time everything interleaved, print the table."""
    repeats = 1 if args.quick else args.repeats
    config, shape = workload_config(args.quick), workload_shape(args.quick)
    sides = {"ours": ours(config, shape, args.dtype)}
    if theirs is not None and not args.skip_hf:
        sides["theirs"] = theirs(config, shape, "float32")
    names = WORKLOADS + tuple(extra_workloads)
    results: dict[str, dict[str, float]] = {who: {} for who in sides}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            size = make_checkpoint(tmp, config)
            print(f"{backend}: checkpoint {size / 1e9:.3f} GB; batch {shape.batch}, source {shape.source}, "
                  f"target {shape.target}, {shape.new_tokens} new tokens, beams {shape.beams}; ours in {args.dtype}", flush=True)
            for who, side in sides.items():  # one-off: load + first forward, then each workload's first call
                side.op({"op": "load", "path": tmp})  # timed below, in fresh processes
                for name in names:
                    results[who][f"{name} first"] = side.op({"op": "run", "name": name, "save": os.path.join(tmp, f"{who}-{name}.npy")})["s"]
            if "theirs" in sides:
                for name in names:
                    a, b = (np.load(os.path.join(tmp, f"{who}-{name}.npy")) for who in ("ours", "theirs"))
                    if name in ("greedy", "beam"):
                        results["ours"][f"{name} ids equal"] = float(a.shape == b.shape and np.array_equal(a, b))
                    else:
                        results["ours"][f"{name} max|dlogits|"] = float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max())
            steady: dict[tuple[str, str], list[float]] = {(w, n): [] for w in sides for n in names}
            for _ in range(repeats):
                for name in names:
                    for who, side in sides.items():
                        steady[who, name].append(side.op({"op": "run", "name": name})["s"])
            loads: dict[str, list[float]] = {who: [] for who in sides}
            for _ in range(repeats):  # a load is one-off work: each in a process of its own
                for who in sides:
                    loads[who].append(fresh_load(args, who, tmp))
            for who, times in loads.items():
                results[who]["load"] = statistics.median(times)
            for (who, name), times in steady.items():
                results[who][name] = statistics.median(times)
                results[who][f"{name} compile"] = max(results[who][f"{name} first"] - results[who][name], 0.0)
            n = 512 if args.quick else 2048
            flops = 2 * n ** 3 / sides["ours"].op({"op": "matmul", "n": n, "dtype": args.dtype})["s"]
            bandwidth = copy_bandwidth((16 if args.quick else 512) * 2 ** 20)
    finally:
        for side in sides.values():
            side.close()
    bounds = workload_bounds(config, shape, size, bandwidth, flops, itemsize=2 if args.dtype != "float32" else 4)
    report = {"backend": backend, "dtype": args.dtype, "quick": bool(args.quick), "repeats": repeats,
              "bandwidth_GBps": bandwidth / 1e9, "matmul_GFLOPs": flops / 1e9, "results": results,
              "bounds": bounds.seconds}
    print_table(report, names)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


#: marks the line of a load probe's stdout that holds its seconds
LOAD_MARK = "load seconds:"


def fresh_load(args: argparse.Namespace, who: str, path: str) -> float:
    """Seconds of load + first forward of ``path`` by side ``who`` in a new process running
    this benchmark's script (``--load-probe``); the imports are not timed.  In a process that
    has already run a model, the first forward would find the framework's threads, allocator
    and caches warm, and whichever side loaded first would pay them."""
    argv = [sys.executable, args.script, "--load-probe", who, "--load-path", path, "--dtype", args.dtype]
    done = subprocess.run(argv + (["--quick"] if args.quick else []), capture_output=True, text=True)
    marked = [line for line in done.stdout.splitlines() if line.startswith(LOAD_MARK)]
    if done.returncode or not marked:
        raise RuntimeError(f"load probe ({who}) exited with code {done.returncode}: {done.stderr[-3000:]}")
    return float(marked[-1][len(LOAD_MARK):])


def print_table(report: dict[str, Any], names: tuple[str, ...]) -> None:
    res, bounds = report["results"], report["bounds"]
    print(f"bounds: copy bandwidth {report['bandwidth_GBps']:.1f} GB/s, {report['dtype']} matmul "
          f"{report['matmul_GFLOPs']:.0f} GFLOP/s; median of {report['repeats']} interleaved runs "
          "(a shared machine: read the ratios, not the seconds)")
    print(f"{'figure':24s} {'ours s':>9s} {'transformers s':>15s} {'ratio':>7s} {'bound s':>9s} {'ours/bound':>11s}")
    rows = [("load + first forward", "load")] + [(n, n) for n in names] + [(f"{n} compile", f"{n} compile") for n in names]
    for label, key in rows:
        ours, theirs = res["ours"].get(key), res.get("theirs", {}).get(key)
        bound = bounds.get(key)
        cells = [f"{ours:9.3f}", f"{theirs:15.3f}" if theirs is not None else f"{'-':>15s}",
                 f"{ours / theirs:7.2f}" if theirs else f"{'-':>7s}",
                 f"{bound:9.3g}" if bound else f"{'-':>9s}", f"{ours / bound:11.1f}" if bound else f"{'-':>11s}"]
        print(f"{label:24s} " + " ".join(cells))
    for key, value in res["ours"].items():
        if key.endswith("max|dlogits|"):
            print(f"{key} (ours {report['dtype']} vs transformers fp32): {value:.2e}")
        elif key.endswith("ids equal"):
            print(f"{key}: {'yes' if value else 'NO'}")


def main(doc: str, backend: str, ours: Callable[..., Side], theirs: Optional[Callable[..., Side]],
         worker: Optional[Callable[..., Side]] = None, extra_workloads: tuple[str, ...] = (),
         argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Parse the common options and run; with ``--worker`` serve ``worker`` instead."""
    args = parser(doc).parse_args(argv)
    args.script = sys.modules[ours.__module__].__file__  # the benchmark script, for load probes
    if args.worker:
        serve(worker(workload_config(args.quick), workload_shape(args.quick), args.dtype))
        return {}
    if args.load_probe:
        make = ours if args.load_probe == "ours" else theirs
        side = make(workload_config(args.quick), workload_shape(args.quick),
                    args.dtype if args.load_probe == "ours" else "float32")
        try:
            print(f"{LOAD_MARK}{side.op({'op': 'load', 'path': args.load_path})['s']!r}", flush=True)
        finally:
            side.close()
        return {}
    return run(args, backend, ours, theirs, extra_workloads)
