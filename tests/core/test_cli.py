"""The encdec command: exit codes, one-line errors, convert/info on a local checkpoint."""
import os
import stat

import numpy as np
import pytest

from encdec import cli


def test_bundled_checkpoint_info(capsys):
    assert cli.main(["info", str(cli.BUNDLED)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "bert encoder -> gpt2 decoder" in out and "safetensors" in out
    size = sum(f.stat().st_size for f in cli.BUNDLED.iterdir())
    assert size < 4 * 2**20  # "a few MB at most"


def test_saved_files_are_not_private():
    for f in cli.BUNDLED.iterdir():
        assert f.stat().st_mode & stat.S_IROTH, f"{f} is not world-readable"


def test_convert_refuses_non_empty_destination(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    code = cli.main(["convert", str(cli.BUNDLED), str(tmp_path), "--no-verify"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT
    assert err.count("\n") == 1 and "not empty; pass --force" in err
    assert (tmp_path / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("fmt,filename", [("safetensors", "model.safetensors"), ("flax-msgpack", "flax_model.msgpack"),
                                          ("tf-h5", "tf_model.h5")])
def test_convert_formats_round_trip(tmp_path, fmt, filename, capsys):
    from encdec.pretrained import load_pretrained

    dst = tmp_path / "out"
    assert cli.main(["convert", str(cli.BUNDLED), str(dst), "--to", fmt, "--no-verify", "--quiet"]) == cli.EXIT_OK
    assert capsys.readouterr().out == ""
    assert (dst / filename).is_file() and (dst / "config.json").is_file()
    _, a, _, _ = load_pretrained(str(cli.BUNDLED))
    _, b, _, _ = load_pretrained(str(dst))
    assert set(a) == set(b) and all((a[k] == b[k]).all() for k in a)


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    code = cli.main(["info", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT and err.startswith("encdec info: error:") and err.count("\n") == 1


def test_unknown_backend(capsys):
    assert cli.main(["compare", "--backends", "mxnet"]) == cli.EXIT_BAD_INPUT
    assert "unknown backend 'mxnet'" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["info", str(tmp_path / "nope"), "--debug"])


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "encdec", "--version"], capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 0 and proc.stdout.startswith("encdec ")


def test_compare_two_backends_with_plot(tmp_path, capsys):
    from encdec.registry import available_backends

    backends = [b for b in ("torch", "flax", "tf") if b in available_backends()][:2]
    if len(backends) < 2:
        pytest.skip("compare needs two installed backends")
    pytest.importorskip("matplotlib")
    png = tmp_path / "deltas.png"
    code = cli.main(["compare", "--backends", ",".join(backends), "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    row = next(line for line in out.splitlines() if line.startswith(backends[0]))
    assert row.split()[-3] == "yes"  # greedy ids equal


@pytest.mark.parametrize("argv, message", [
    (["compare", "--backends", ","], "--backends ',' names no backend"),
    (["convert", "SRC", "DST", "--no-verify", "--backends", "bogus"], "unknown backend 'bogus'"),
    (["compare", "--batch", "0"], "--batch must be a positive integer, got 0"),
    (["compare", "--batch", "-1"], "--batch must be a positive integer, got -1"),
    (["compare", "--max-new-tokens", "0"], "--max-new-tokens must be a positive integer"),
    (["compare", "--seed", "-1"], "--seed must be in [0, 2**32)"),
    (["train-compare", "--steps", "0"], "--steps must be a positive integer, got 0"),
    (["train-compare", "--lr", "-1"], "AdamW: learning_rate must be > 0, got -1.0"),
    (["train-compare", "--beta2", "1"], "AdamW: beta2 must be in [0, 1), got 1.0"),
    (["info", str(cli.BUNDLED / "model.safetensors")], "is not a config.json (not UTF-8 text); pass the checkpoint folder"),
])
def test_misuse_is_bad_input_with_one_line(argv, message, capsys, tmp_path):
    argv = [str(tmp_path / "dst") if a == "DST" else str(cli.BUNDLED) if a == "SRC" else a for a in argv]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"encdec {argv[0]}: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "dst").exists()  # refused before anything was written


def test_train_compare_writes_curves_and_reports(tmp_path, capsys):
    """The command's plumbing on the PyTorch backend (the cross-backend agreement of the
    training helpers is checked in tests/flax/test_training_doc.py and
    tests/tf/test_keras_training.py): CSV rows per step, the PNG (or a clear message without
    matplotlib), exit codes, and dropout on changing the curve."""
    from encdec.init import init_weights
    from encdec.pretrained import save_pretrained
    from encdec.registry import available_backends
    from encdec.specs import encoder_decoder_spec
    from tests.core.tiny import tiny_composite

    backends = [b for b in ("torch",) if b in available_backends()]
    if not backends:
        pytest.skip("this test runs the PyTorch backend")
    config = tiny_composite("bert", "gpt2")
    save_pretrained(tmp_path / "ckpt", config, init_weights(encoder_decoder_spec(config), seed=0))
    csv, png = tmp_path / "curves.csv", tmp_path / "curves.png"
    argv = ["train-compare", str(tmp_path / "ckpt"), "--steps", "3", "--batch", "2", "--csv", str(csv), "--plot", str(png)]
    code = cli.main([*argv, "--backends", ",".join(backends), "--tolerance", "0"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK, out
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    assert rows[0] == ["step", *(f"loss_{b}" for b in backends), "max_abs_diff"] and len(rows) == 4
    losses = np.array([[float(x) for x in row[1:-1]] for row in rows[1:]])
    assert np.isfinite(losses).all() and len(set(losses[:, 0])) == 3
    assert "largest loss difference: 0.00e+00" in out
    try:
        import matplotlib  # noqa: F401

        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    except ImportError:
        assert "matplotlib is not installed" in out and not png.exists()
    # dropout on: a different curve, reported without applying the tolerance
    assert cli.main([*argv, "--backends", "torch", "--dropout", "on", "--tolerance", "0"]) == cli.EXIT_OK
    dropped = np.array([float(r.split(",")[1]) for r in csv.read_text().splitlines()[1:]])
    assert np.abs(dropped - losses[:, 0]).max() > 1e-4
    assert "not applied: dropout draws differ" in capsys.readouterr().out


def test_train_compare_exit_code_and_pairs(tmp_path, capsys, monkeypatch):
    """Curves further apart than --tolerance give exit code 1 with dropout off (0 with it on);
    with three backends the largest difference per pair is printed.  Backends are stubbed."""
    from encdec.runner import Runner

    curves = {"torch": [5.0, 4.0], "tf": [5.0, 4.001], "flax": [5.0, 4.0000005]}

    class Stub:
        def __init__(self, backend):
            self.backend = backend

        def train_adamw(self, batches, settings, seed=0):
            assert len(batches) == 2 and settings.weight_decay == 0.5
            return curves[self.backend]

    monkeypatch.setattr(cli, "_backends", lambda arg: list(curves))
    monkeypatch.setattr(Runner, "from_weights", classmethod(lambda cls, backend, config, weights: Stub(backend)))
    argv = ["train-compare", "--steps", "2", "--weight-decay", "0.5", "--csv", str(tmp_path / "c.csv"), "--plot", ""]
    assert cli.main(argv) == cli.EXIT_MISMATCH
    out = capsys.readouterr().out
    assert "largest loss difference: 1.00e-03 at step 2" in out
    assert "largest per pair: torch-tf 1.00e-03, torch-flax 5.00e-07, tf-flax 1.00e-03" in out
    assert cli.main([*argv, "--tolerance", "2e-3"]) == cli.EXIT_OK
    assert cli.main([*argv, "--dropout", "on"]) == cli.EXIT_OK
    assert (tmp_path / "c.csv").read_text().splitlines()[2] == "2,4,4.001,4.0000005,1.000e-03"
