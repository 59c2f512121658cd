"""Reading weight files safely: state dicts via ``torch.load(weights_only=True)`` or safetensors, never pickled code."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deepvis.core.errors import ModelError, one_line


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file (``.pt``/``.pth``/``.bin``, or ``.safetensors``).

    A checkpoint that wraps its weights in ``{"state_dict": ...}`` (or ``"model"``) is unwrapped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file not found: '{path}'")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file  # optional dependency
        except ImportError:
            raise ModelError(f"reading '{path}' needs the safetensors package: pip install safetensors") from None
        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelError(f"cannot read weights '{path}': {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = one_line(exc, 200)
        raise ModelError(f"cannot read weights '{path}' (a state dict saved with torch.save is expected): {first}") \
            from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"'{path}' does not hold a state dict (found {type(state).__name__})")
    return state


def load_weights(net: nn.Module, path: str | Path, target: str) -> None:
    """Load a state-dict file into ``net``; ``target`` names the architecture in the error when they do not fit."""
    state = read_state_dict(path)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(f"weights '{path}' do not fit {target}: {' '.join(first[:3])}") from None
