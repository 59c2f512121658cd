"""Baselines and readings shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import torch
from torch import nn


class _Stop(Exception):
    pass


def plain_backward(net: nn.Module, module: nn.Module, x: torch.Tensor, channel: int, stop: bool) -> torch.Tensor:
    """The bare-model baseline: input gradient of ``module``'s output with start signal = the channel's activation
    map, by a forward hook and ``torch.autograd.grad``; ``stop`` ends the forward pass at ``module``."""
    x = x.detach().clone().requires_grad_(True)
    store = {}

    def hook(_module, _inputs, output):
        store["act"] = output
        if stop:
            raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            try:
                net(x)
            except _Stop:
                pass
            act = store["act"]
            start = torch.zeros_like(act)
            start[:, channel] = act[:, channel].detach()
            (grad,) = torch.autograd.grad(act, x, grad_outputs=start)
    finally:
        handle.remove()
    return grad


def rss_mib() -> float:
    """This process's resident memory, MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
