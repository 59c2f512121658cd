"""Unit addresses: ``layer:channel``, ``layer:channel@y,x`` or ``layer:channel@cls`` / ``@t<i>`` — one parser, one
printer."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from deepvis.core.errors import UnitError

log = logging.getLogger(__name__)

_POSITION = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")
_TOKEN = re.compile(r"^\s*(?:(cls)|t(\d+))\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Unit:
    """A channel of a layer, optionally at one spatial position ``(y, x)`` of its grid, or at one of a token
    layer's extra tokens (``token``: 0 is the first, e.g. CLS; written ``@cls`` / ``@t<i>``)."""

    layer: str
    channel: int
    position: tuple[int, int] | None = None
    token: int | None = None

    def __post_init__(self):
        if self.position is not None and self.token is not None:
            raise UnitError(f"unit '{self.layer}:{self.channel}' has both a position and an extra token")

    def __str__(self) -> str:
        text = f"{self.layer}:{self.channel}"
        if self.position is not None:
            text += f"@{self.position[0]},{self.position[1]}"
        elif self.token is not None:
            text += "@cls" if self.token == 0 else f"@t{self.token}"
        return text

    @property
    def located(self) -> bool:
        """True when the unit names one place of its channel (a grid position or an extra token)."""
        return self.position is not None or self.token is not None

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
    position = token = None
    if at:
        match, token_match = _POSITION.match(pos_text), _TOKEN.match(pos_text)
        if match:
            position = (int(match.group(1)), int(match.group(2)))
        elif token_match:
            token = 0 if token_match.group(1) else int(token_match.group(2))
        else:
            raise UnitError(f"malformed unit {text!r}: position {pos_text!r} must be 'y,x' with non-negative integers, "
                            "'cls' or 't<i>' (an extra token of a token layer)")
    return Unit(layer.strip(), int(channel_text), position, token)


def check_unit(unit: Unit, shape: tuple[int, ...] | None, channel: bool = True, extra_tokens: int = 0) -> Unit:
    """``unit`` checked against its layer's ``shape`` (the (C, H, W) or (C,) view, no batch dimension) and its
    number of extra tokens: the channel exists, a position only on a 2-D map and inside it, an extra token only
    where the layer has it. Returns the unit; raises :class:`UnitError` naming what is wrong.

    The one place these checks live: every consumer (backward passes, receptive fields, objectives, crops, the
    server) asks here. ``channel=False`` skips the channel check (objectives whose channel is not an index).
    """
    if shape is None:
        raise UnitError(f"layer '{unit.layer}' does not output a single tensor, so its units cannot be addressed")
    channels, spatial = shape[0], tuple(shape[1:])
    if channel and not 0 <= unit.channel < channels:
        raise UnitError(f"channel {unit.channel} out of range for layer '{unit.layer}', which has {channels} "
                        f"channels (0-{channels - 1}): unit '{unit}'")
    if unit.position is not None:
        if len(spatial) != 2:
            raise UnitError(f"unit '{unit}' has a position, but layer '{unit.layer}' has no spatial dimensions "
                            f"(output shape {tuple(shape)}); use '{unit.layer}:{unit.channel}'")
        y, x = unit.position
        if y >= spatial[0] or x >= spatial[1]:
            raise UnitError(f"position {y},{x} out of range for layer '{unit.layer}' of size "
                            f"{spatial[0]}x{spatial[1]}: unit '{unit}'")
    if unit.token is not None and unit.token >= extra_tokens:
        has = f"only {extra_tokens} extra tokens (@cls, @t1, ...)" if extra_tokens else "no extra tokens"
        raise UnitError(f"unit '{unit}' names an extra token, but layer '{unit.layer}' has {has}")
    return unit


def clamp_channels(channels, count: int, layer: str, command: str) -> list[int]:
    """The channels of a ``--units FIRST-LAST`` range (all ``count`` when None) that a layer of ``count`` channels
    has; those past its last are left out with a note (``command: note: ...``, a warning of this module's logger:
    the CLI shows it on stderr). None left is a :class:`UnitError`."""
    if channels is None:
        return list(range(count))
    asked = list(channels)
    kept = [c for c in asked if 0 <= c < count]
    if not kept:
        first = next((c for c in asked if not 0 <= c < count), asked[0] if asked else 0)
        raise UnitError(f"channel {first} out of range for layer '{layer}', which has {count} channels "
                        f"(0-{count - 1}): {command} --units {_span(asked)} names none of them")
    if len(kept) < len(asked):
        log.warning("%s: note: layer '%s' has %d channels (0-%d): doing %s of %s", command, layer, count, count - 1,
                    _span(kept), _span(asked))
    return kept


def _span(channels: list[int]) -> str:
    if not channels:
        return "none"
    if channels == list(range(channels[0], channels[-1] + 1)):
        return f"{channels[0]}-{channels[-1]}" if len(channels) > 1 else str(channels[0])
    return ",".join(map(str, channels))
