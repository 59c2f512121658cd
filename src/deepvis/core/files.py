"""Files: atomic writes (a temporary file, then ``os.replace``) and reading small text files with one-line errors."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

from deepvis.core.errors import ModelError

_TEMPORARY_NUMBERS = itertools.count()


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path``; a missing or unreadable file is a :class:`ModelError` naming ``what`` it is."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{what} file not found: '{path}'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {what} file '{path}': {exc}") from None


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: readers never see half a file.
    ``durable``: flush it to the disk first (``fsync``), so a power cut cannot leave an empty file behind either.
    The temporary file is created with the usual permissions (0o666 less the umask) and a name no other process or
    thread uses; the folder is made only when missing (crops write thousands of small files: each system call
    counts, and so do pathlib's objects: plain strings and file descriptors here)."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    prefix = os.path.join(folder, f".{name}.{os.getpid()}-{threading.get_ident()}-")
    tmp = f"{prefix}{next(_TEMPORARY_NUMBERS)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileNotFoundError:
            os.makedirs(folder or ".", exist_ok=True)
        except FileExistsError:  # left by a killed run of another process that had this pid: another name
            tmp = f"{prefix}{next(_TEMPORARY_NUMBERS)}.tmp"
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_if_present(path: str) -> None:
    """Remove a file if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
