"""Small file helpers shared by config, weight and generation-config writers."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """Permissions a plain ``open``/``mkdir`` would give under the current umask
    (``mkstemp``/``mkdtemp`` create private 0600/0700 entries)."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turn any failure to write ``path`` (disk full, file too large, permissions; torch's
    RuntimeError) into an ``OSError`` that names the file."""
    try:
        yield
    except OSError as err:
        if err.errno is None:
            raise OSError(f"could not write {path}: {err}") from err
        raise OSError(err.errno, f"could not write {path}: {err.strerror or err}") from err
    except RuntimeError as err:  # torch.save reports short writes this way
        raise OSError(f"could not write {path}: {err}") from err


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; an interrupted write leaves
    the previous file untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    os.close(fd)
    try:
        with writing(path):
            write(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)
