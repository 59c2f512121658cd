"""Unit addresses: ``layer:channel`` or ``layer:channel@y,x`` — one parser, one printer."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UnitError

_POSITION = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")


@dataclass(frozen=True)
class Unit:
    """A channel of a layer, optionally at one spatial position ``(y, x)``."""

    layer: str
    channel: int
    position: tuple[int, int] | None = None

    def __str__(self) -> str:
        text = f"{self.layer}:{self.channel}"
        if self.position is not None:
            text += f"@{self.position[0]},{self.position[1]}"
        return text

    def at(self, y: int, x: int) -> "Unit":
        """The same channel at a given spatial position."""
        return Unit(self.layer, self.channel, (int(y), int(x)))


def parse_unit(text: str | Unit) -> Unit:
    """Parse ``layer:channel[@y,x]``; dotted and colon-containing layer names stay intact."""
    if isinstance(text, Unit):
        return text
    if not isinstance(text, str):
        raise UnitError(f"unit must be a string like 'blocks.5:42', got {text!r}")
    raw = text.strip()
    body, at, pos_text = raw.partition("@")
    layer, colon, channel_text = body.rpartition(":")
    hint = "expected 'layer:channel' or 'layer:channel@y,x', e.g. 'blocks.5:42'"
    if not colon or not layer.strip():
        raise UnitError(f"malformed unit {text!r}: {hint}")
    channel_text = channel_text.strip()
    if not channel_text.isdigit():
        raise UnitError(f"malformed unit {text!r}: channel {channel_text!r} is not a non-negative integer; {hint}")
    position = None
    if at:
        match = _POSITION.match(pos_text)
        if not match:
            raise UnitError(f"malformed unit {text!r}: position {pos_text!r} must be 'y,x' with non-negative integers")
        position = (int(match.group(1)), int(match.group(2)))
    return Unit(layer.strip(), int(channel_text), position)
