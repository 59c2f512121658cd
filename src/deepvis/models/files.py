"""Reading the small text files a model comes with (prototxts, label lists), with one-line errors."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path``; a missing or unreadable file is a :class:`ModelError` naming ``what`` it is."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{what} file not found: '{path}'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {what} file '{path}': {exc}") from None
