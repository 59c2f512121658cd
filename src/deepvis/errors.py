"""The one exception type users see: a clear, one-line message naming the bad value."""


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
