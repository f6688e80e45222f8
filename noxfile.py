"""nox sessions: the core alone (no framework), each backend, and the conformance suite.

Every install goes through constraints.txt, which pins torch to the 2.13.0 CPU build.
"""
import nox

nox.options.default_venv_backend = "venv"
CONSTRAINTS = ("-c", "constraints.txt")


@nox.session
def core(session: nox.Session) -> None:
    """Core without any framework: import check and core tests (oracle-free parts)."""
    session.install(*CONSTRAINTS, "-e", ".", "pytest", "h5py", "msgpack")
    session.run("python", "-c", "import encdec, sys; assert not {'torch','tensorflow','jax','flax'} & set(sys.modules)")
    session.run("pytest", "-q", "tests/core", *session.posargs)


@nox.session
@nox.parametrize("backend", ["torch", "tf", "flax"])
def backend(session: nox.Session, backend: str) -> None:
    """One backend with the transformers oracle."""
    session.install(*CONSTRAINTS, "torch==2.13.0")
    session.install(*CONSTRAINTS, "-e", f".[{backend},test]")
    session.run("pytest", "-q", f"tests/{backend}", *session.posargs)


@nox.session
def conformance(session: nox.Session) -> None:
    """All three backends against each other and transformers 4.57."""
    session.install(*CONSTRAINTS, "-e", ".[all,test]")
    session.run("pytest", "-q", "conformance_tests", *session.posargs)
