"""A tab's view request: its whole view state (cursor, modes, boosts, overlay), parsed from JSON and checked."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepvis.core.errors import DeepvisError
from deepvis.engine.backprop import MODES
from deepvis.pixels.render import FILTERS

__all__ = ["ViewRequest"]


@dataclass
class ViewRequest:
    """A tab's view state: what the panes should show."""

    input: str
    layer: str
    channel: int = 0
    cursor: str = "layers"  # 'layers' (layer list) or 'grid' (unit grid)
    boost_indiv: float = 0.0
    boost_gamma: float = 1.0
    show_back: bool = False  # 'a': the grid shows backward diffs instead of activations
    back_enabled: bool = True
    back_mode: str = "gradient"
    back_filter: str = "raw"
    back_layer: str | None = None  # the backward origin (the selected or the frozen unit)
    back_channel: int | None = None
    back_frozen: bool = False
    highlight: dict = field(default_factory=dict)
    overlay: str | None = None  # the input pane's overlay: an attribution method, 'rollout' or 'attention'; None: off
    overlay_alpha: float = 0.5
    overlay_layer: str | None = None  # the Grad-CAM layer (None: the last spatial layer before the unit's)
    overlay_head: int = 0  # attention: 0 the mean of the heads, k head k - 1 (taken modulo heads + 1)
    overlay_token: list | None = None  # attention: the [y, x] patch-grid position of the token (None: CLS)
    grid_key: str | None = None  # the key of the grid picture the tab shows: not sent again when it is unchanged

    @classmethod
    def from_json(cls, data: dict) -> "ViewRequest":
        """The request a tab sent (unknown keys ignored), checked: a :class:`DeepvisError` names the bad value."""
        if not isinstance(data, dict):
            raise DeepvisError("the view request must be a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "input" not in known or "layer" not in known:
            raise DeepvisError("the view request needs 'input' (an input id) and 'layer' (a layer name)")
        for name in ("input", "layer", "cursor", "back_mode", "back_filter", "back_layer", "overlay", "overlay_layer",
                     "grid_key"):
            value = known.get(name)
            if value is not None and not isinstance(value, str):
                raise DeepvisError(f"bad view request: '{name}' must be a string, got {value!r:.60}")
        for name in ("show_back", "back_enabled", "back_frozen"):
            value = known.get(name)
            if value is None:
                known.pop(name, None)
            elif not isinstance(value, (bool, int)) or value not in (0, 1):
                raise DeepvisError(f"bad view request: '{name}' must be true or false, got {value!r:.60}")
            else:
                known[name] = bool(value)
        if known.get("highlight") is None or not isinstance(known["highlight"], dict):
            known.pop("highlight", None)
        try:
            request = cls(**known)
            request.channel = _integer(request.channel, "channel")
            request.boost_indiv = float(request.boost_indiv)
            request.boost_gamma = float(request.boost_gamma)
            if request.back_channel is not None:
                request.back_channel = _integer(request.back_channel, "back_channel")
            request.overlay_alpha = float(request.overlay_alpha)
            request.overlay_head = _integer(request.overlay_head, "overlay_head")
            if request.overlay_token is not None:
                if not isinstance(request.overlay_token, list) or len(request.overlay_token) != 2:
                    raise ValueError(f"'overlay_token' must be [y, x], got {request.overlay_token!r:.60}")
                request.overlay_token = [_integer(v, "overlay_token") for v in request.overlay_token]
        except (TypeError, ValueError, OverflowError) as exc:
            raise DeepvisError(f"bad view request: {exc}") from None
        if request.cursor not in ("layers", "grid"):
            raise DeepvisError(f"bad view request: 'cursor' must be 'layers' or 'grid', got {request.cursor!r:.60}")
        if request.back_channel is not None and request.back_channel < 0:
            raise DeepvisError(f"bad view request: 'back_channel' must be a non-negative integer, "
                               f"got {request.back_channel}")
        if request.back_channel is not None and request.back_layer is None:
            request.back_channel = None
        if request.back_mode not in MODES:
            raise DeepvisError(f"unknown backward mode {request.back_mode!r}: use one of {', '.join(MODES)}")
        if request.back_filter not in FILTERS:
            raise DeepvisError(f"unknown filter {request.back_filter!r}: use one of {', '.join(FILTERS)}")
        if not 0.0 <= request.overlay_alpha <= 1.0 or request.overlay_head < 0:
            raise DeepvisError("overlay_alpha must be in [0, 1] and overlay_head a non-negative integer")
        if not 0.0 <= request.boost_indiv <= 1.0 or not 0.05 <= request.boost_gamma <= 4.0:
            raise DeepvisError("boost_indiv must be in [0, 1] and boost_gamma in [0.05, 4]")
        return request


def _integer(value, name: str) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"'{name}' must be an integer, got {value!r}")
    if isinstance(value, (bool, list, dict)) or value is None:
        raise ValueError(f"'{name}' must be an integer, got {value!r:.60}")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"'{name}' must be an integer, got {value!r:.60}") from None
