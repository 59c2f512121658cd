"""A decoded protobuf message as plain data: field name -> list of values, with typed, defaulted accessors.

Both readers produce it: the ``.prototxt`` text parser and the ``.caffemodel`` binary decoder. Fields this project
does not know are kept (text) or skipped (binary) and simply never asked for, which is how deploy files full of
training-only settings (``param { lr_mult }``, ``weight_filler``, ``blobs_lr``...) load without complaint.
"""

from __future__ import annotations

from typing import Any, Mapping

from deepvis.core.errors import ModelError


class Ident(str):
    """A bare identifier in text format (an enum value such as ``MAX`` or ``CONVOLUTION``, or ``true``)."""


class Message:
    """Repeated and optional fields alike are lists; optional accessors return the last value, as protobuf does.

    ``where`` says where the message came from (``deploy.prototxt:12:3``), for error messages.
    """

    def __init__(self, where: str = ""):
        self.fields: dict[str, list[Any]] = {}
        self.where = where

    def add(self, name: str, value: Any) -> None:
        self.fields.setdefault(name, []).append(value)

    def has(self, name: str) -> bool:
        return bool(self.fields.get(name))

    def all(self, name: str) -> list[Any]:
        return self.fields.get(name, [])

    def last(self, name: str, default: Any = None) -> Any:
        values = self.fields.get(name)
        return values[-1] if values else default

    def message(self, name: str) -> "Message":
        """A sub-message, or an empty one (all defaults) when absent."""
        value = self.last(name)
        if value is None:
            return Message(self.where)
        if not isinstance(value, Message):
            raise self.error(f"field '{name}' must be a message {{ ... }}, got {value!r}")
        return value

    def messages(self, name: str) -> list["Message"]:
        values = self.all(name)
        for value in values:
            if not isinstance(value, Message):
                raise self.error(f"field '{name}' must be a message {{ ... }}, got {value!r}")
        return values

    def string(self, name: str, default: str = "") -> str:
        value = self.last(name, default)
        if not isinstance(value, str):
            raise self.error(f"field '{name}' must be a string, got {value!r}")
        return str(value)

    def strings(self, name: str) -> list[str]:
        return [self._check(name, v, str, "a string") for v in self.all(name)]

    def int(self, name: str, default: int = 0) -> int:
        return self._check(name, self.last(name, default), int, "an integer")

    def ints(self, name: str) -> list[int]:
        values: list[int] = []
        for value in self.all(name):
            if hasattr(value, "tolist"):  # a packed array from the binary decoder
                values.extend(int(v) for v in value.tolist())
            else:
                values.append(self._check(name, value, int, "an integer"))
        return values

    def float(self, name: str, default: float = 0.0) -> float:
        value = self.last(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"field '{name}' must be a number, got {value!r}")
        return float(value)

    def floats(self, name: str) -> list[float]:
        return [self._check(name, v, (int, float), "a number") * 1.0 for v in self.all(name)]

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.last(name, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, Ident) and value in ("true", "True", "t"):
            return True
        if isinstance(value, Ident) and value in ("false", "False", "f"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise self.error(f"field '{name}' must be true or false, got {value!r}")

    def enum(self, name: str, values: Mapping[str, int], default: str) -> str:
        """An enum field as its value's name (text gives names, binary gives numbers; both accepted)."""
        value = self.last(name, default)
        if isinstance(value, str) and value in values:
            return str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            for key, number in values.items():
                if number == value:
                    return key
        raise self.error(f"field '{name}' must be one of {', '.join(values)}, got {value!r}")

    def error(self, text: str) -> ModelError:
        return ModelError(f"{self.where}: {text}" if self.where else text)

    def _check(self, name: str, value: Any, kind, what: str):
        if isinstance(value, bool) or not isinstance(value, kind) or isinstance(value, Ident) and kind is str:
            raise self.error(f"field '{name}' must be {what}, got {value!r}")
        return value

    def __repr__(self) -> str:
        return f"Message({self.where!r}, {sorted(self.fields)})"
