"""The docs' code runs: every ```python block of every docs/*.md page is executed, the
blocks of one page in order in one fresh interpreter (so TensorFlow, JAX and PyTorch never
share a process) inside a temporary working folder.  A page whose imports are not
installed is skipped.  Also: the README's commands are the ones CI runs."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: A backend package is usable only when its framework is installed too.
FRAMEWORK_OF = {"encdec_torch": "torch", "encdec_tf": "tensorflow", "encdec_flax": "flax"}
PAGE_TIMEOUT_S = 300
FENCE = re.compile(r"^```(\S*)\s*$")

#: Runs in the child: executes the blocks in one namespace, and on the first error prints
#: the block number and its traceback (compiled as "docs/<page>" with the block's line
#: offset, so traceback lines are the page's lines).
RUNNER = r"""
import json, sys, traceback
page, blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for number, (line, code) in enumerate(blocks, 1):
    try:
        exec(compile("\n" * (line - 1) + code, f"docs/{page}", "exec"), namespace)
    except BaseException:
        sys.stdout.flush()
        print(f"@@block {number} (line {line})", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def python_blocks(text: str, where: str) -> list[tuple[int, str]]:
    """``(first code line number, code)`` of each fenced ```python block, in order."""
    blocks, lang, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if lang is None:
            if match:
                lang, start, lines = match.group(1), number + 1, []
        elif line.strip() == "```":
            if lang == "python":
                blocks.append((start, "\n".join(lines) + "\n"))
            lang = None
        else:
            lines.append(line)
    if lang is not None:
        raise ValueError(f"{where}: code fence opened on line {start - 1} is never closed")
    return blocks


def imported_roots(blocks: list[tuple[int, str]]) -> set[str]:
    """Top-level names of the modules the blocks import."""
    roots = set()
    for _, code in blocks:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue  # the page's run reports it, with the block number
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots


def missing_modules(page: Path) -> list[str]:
    """Modules ``page``'s blocks import that are not installed."""
    roots = imported_roots(python_blocks(page.read_text(), page.name))
    needed = roots | {FRAMEWORK_OF[r] for r in roots if r in FRAMEWORK_OF}
    return sorted(r for r in needed if importlib.util.find_spec(r) is None)


PAGES = sorted(DOCS.glob("*.md"))
PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p.read_text(), p.name)]


class PageRuns:
    """Runs the selected pages' subprocesses, at most ``parallel`` at a time (compilation
    in TF/XLA and JAX is largely single-threaded, so pages overlap well), each in its own
    temporary folder with output to files; :meth:`result` waits for one page."""

    def __init__(self, pages: list[Path], root: Path, parallel: int) -> None:
        self.queue, self.root, self.parallel = list(pages), root, parallel
        self.running: dict[Path, tuple[subprocess.Popen, float]] = {}
        self.done: dict[Path, tuple[int | None, str, str]] = {}

    def _start(self, page: Path) -> None:
        folder = self.root / page.stem
        (folder / "work").mkdir(parents=True)
        job = folder / "blocks.json"
        job.write_text(json.dumps([page.name, python_blocks(page.read_text(), page.name)]))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
        }
        with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
            proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(job)], cwd=folder / "work", env=env,
                                    stdout=out, stderr=err, text=True)
        self.running[page] = (proc, time.monotonic())

    def _collect(self) -> None:
        for page, (proc, started) in list(self.running.items()):
            code = proc.poll()
            if code is None:
                if time.monotonic() - started <= PAGE_TIMEOUT_S:
                    continue
                proc.kill()  # code stays None: reported as a timeout
                proc.wait()
            folder = self.root / page.stem
            self.done[page] = (code, (folder / "stdout").read_text(), (folder / "stderr").read_text())
            del self.running[page]
        while self.queue and len(self.running) < self.parallel:
            self._start(self.queue.pop(0))

    def result(self, page: Path) -> tuple[int | None, str, str]:
        """``(exit code or None on timeout, stdout, stderr)`` of ``page``."""
        if page not in self.done and page not in self.running:
            if page in self.queue:
                self.queue.remove(page)
            self.queue.insert(0, page)
        while page not in self.done:
            self._collect()
            if page not in self.done:
                time.sleep(0.2)
        return self.done[page]

    def close(self) -> None:
        for proc, _ in self.running.values():
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def page_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    selected = [item.callspec.params["page"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_page_runs" and Path(item.path) == Path(__file__)]
    runnable = [p for p in selected if not missing_modules(p)]
    runs = PageRuns(runnable, tmp_path_factory.mktemp("docs"), parallel=max(2, os.cpu_count() or 1))
    yield runs
    runs.close()


def test_quickstarts_have_code():
    names = {p.name for p in PAGES_WITH_CODE}
    for page in ("quickstart_torch.md", "quickstart_tf.md", "quickstart_flax.md", "cli.md"):
        assert page in names, f"docs/{page} is missing or has no ```python block"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[p.name for p in PAGES_WITH_CODE])
def test_page_runs(page: Path, page_runs: PageRuns) -> None:
    where = f"docs/{page.name}"
    missing = missing_modules(page)
    if missing:
        pytest.skip(f"{where} needs {', '.join(missing)}, not installed")
    code, out, err = page_runs.result(page)
    if code is None:
        pytest.fail(f"{where}: did not finish within {PAGE_TIMEOUT_S} s\n--- stdout (tail) ---\n{out[-2000:]}",
                    pytrace=False)
    if code != 0:
        block = err[err.find("@@block"):] if "@@block" in err else err[-4000:]
        pytest.fail(f"{where}: python {block.removeprefix('@@')}\n--- stdout (tail) ---\n{out[-2000:]}",
                    pytrace=False)


# --- README commands and CI ---------------------------------------------------------------
def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [code.strip() for lang, code in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M) if lang == "bash"]


def ci_chain() -> str:
    """The text of .ci/run and of the scripts it runs with ``bash``."""
    run = (ROOT / ".ci" / "run").read_text()
    called = re.findall(r"^\s*bash\s+(\S+)", run, re.M)
    return "\n".join([run, *[(ROOT / c).read_text() for c in called]])


def test_readme_has_two_commands():
    commands = readme_commands()
    assert len(commands) == 2, f"README.md should show exactly two bash commands, found {commands}"


def test_readme_test_command_is_what_ci_runs():
    test_command = readme_commands()[1]
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^\s*{re.escape(test_command)}(\s|$)", run, re.M), \
        f"README's test command {test_command!r} is not run verbatim by .ci/run"


def test_readme_setup_command_is_covered_by_ci():
    """README's first command is venv + install + ``encdec compare``.  CI's chain creates the
    same venv and installs with the same constraints and a superset of the extras; the
    ``compare`` itself runs in docs/cli.md, which :func:`test_page_runs` executes."""
    steps = [s.strip() for s in readme_commands()[0].split("&&")]
    chain = ci_chain()
    venv, install, compare = steps
    assert venv in chain, f"CI does not create the venv as README does ({venv!r})"
    pip = shlex.split(install)
    assert pip[0] == ".venv/bin/pip" and pip[1] == "install" and "-c" in pip and "-e" in pip, install
    constraints, target = pip[pip.index("-c") + 1], pip[pip.index("-e") + 1]
    extras = set(re.fullmatch(r"\.\[(.*)\]", target).group(1).split(","))
    ci_installs = re.findall(r"pip install .*-c (\S+) -e \"\.\[([^\]]*)\]\"", chain)
    assert any(c == constraints and extras <= set(e.split(",")) for c, e in ci_installs), \
        f"CI installs {ci_installs}, README installs -c {constraints} {target}"
    assert compare == ".venv/bin/encdec compare", compare
    assert re.search(r'main\(\["compare"\]\)', (DOCS / "cli.md").read_text()), \
        "docs/cli.md no longer runs `encdec compare` on the bundled checkpoint"


def test_console_script_installed():
    """The ``encdec`` entry point README's first command calls exists and runs."""
    script = Path(sys.executable).with_name("encdec")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (package not pip-installed)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("encdec "), proc.stderr


def test_mkdocs_nav():
    """Every page mkdocs.yml lists exists, and the guides this project promises are listed."""
    listed = re.findall(r"([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert not [p for p in listed if not (DOCS / p).is_file()], f"mkdocs.yml lists missing pages: {listed}"
    for page in ("index.md", "quickstart_torch.md", "quickstart_tf.md", "quickstart_flax.md", "cli.md",
                 "conversion.md", "conformance.md", "adding_an_architecture.md"):
        assert page in listed, f"mkdocs.yml does not list {page}"
