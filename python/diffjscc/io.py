"""Small file helpers: every file the project writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from diffjscc.errors import OutputError


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before any work is done, a file path that cannot be written.

    Raises :class:`OutputError` with a one-line reason: the path is a folder, a parent is
    a file, the name is too long, or the folder cannot be created or written to.
    """
    path = Path(path)
    try:
        is_dir = not path.name or path.is_dir()
    except OSError:  # e.g. a name too long to stat: the loop below says which
        is_dir = False
    if is_dir:
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{what} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"{what} {path}: folder {parent} is not writable")
            try:
                name_max = os.pathconf(parent, "PC_NAME_MAX")
            except (OSError, ValueError):
                name_max = 255
            # The temporary file beside it has a longer name than the file itself.
            longest = max(len(os.fsencode(p)) for p in path.relative_to(parent).parts)
            if longest + _TMP_EXTRA > name_max:
                raise OutputError(
                    f"{what} {path}: a name of {longest} bytes is longer than this "
                    f"file system allows ({name_max - _TMP_EXTRA} here)"
                )
            break
    return path


# ".NAME." + mkstemp's 8 random characters + ".tmp"
_TMP_EXTRA = 14


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On any error the temporary file is removed and ``path`` is left untouched. A path
    that cannot be written raises :class:`OutputError` naming the reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        check_output_path(path)  # the clearer reason, where it can tell one
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, path)
        except IsADirectoryError as exc:
            raise OutputError(f"cannot write {path}: is a folder") from exc
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
