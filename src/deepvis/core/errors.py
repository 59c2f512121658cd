"""The exception types users see, each with a clear, one-line message naming the bad value."""


class DeepvisError(Exception):
    """A user-facing error (bad input, unknown layer, unreadable image...).

    The CLI prints its message on one line and exits non-zero, never a traceback.
    """


class UnitError(DeepvisError, ValueError):
    """A unit string or address that is malformed or does not exist in the model."""


class ImageError(DeepvisError):
    """An image that cannot be read or is too large to decode safely."""


class ModelError(DeepvisError):
    """A model spec that cannot be loaded."""


class PreprocessingError(ModelError, ValueError):
    """Preprocessing settings that do not fit together (channel order, mean, std, input size, resize mode); a
    ``ValueError`` too, as the bad value it names."""


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` with every run of whitespace made one space (optionally cut to ``limit`` characters), as error
    messages are shown: one line, never a wall of text."""
    line = " ".join(str(text).split())
    return line if limit is None else line[:limit]
