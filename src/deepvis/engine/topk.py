"""Streaming per-channel top-k over a dataset, tensors only: the heart of find-max.

Each image contributes, per channel, one entry: its spatial maximum and where it is (the first maximum in row-major
order). Entries are ordered by value (highest first), ties broken by the lower image index — a total order, since
an image has one entry per channel — so the result is the same whatever the batch size, the order batches arrive
in, or how many processes share the work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TopK:
    """The k best (value, image, y, x) per channel; ``image == -1`` marks an empty slot."""

    values: torch.Tensor  # (C, k) float32, rank 0 = highest
    images: torch.Tensor  # (C, k) int64
    ys: torch.Tensor  # (C, k) int64, -1 for fully connected layers
    xs: torch.Tensor  # (C, k) int64

    @classmethod
    def empty(cls, channels: int, k: int, device: torch.device | str = "cpu") -> "TopK":
        values = torch.full((channels, k), float("-inf"), device=device)
        minus_one = torch.full((channels, k), -1, dtype=torch.int64, device=device)
        return cls(values, minus_one.clone(), minus_one.clone(), minus_one.clone())

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def update(self, acts: torch.Tensor, image_indices: torch.Tensor) -> "TopK":
        """Merge a batch: ``acts`` (N, C, H, W) or (N, C), ``image_indices`` (N,)."""
        n, channels = acts.shape[:2]
        device = self.values.device
        indices = image_indices.to(device=device, dtype=torch.int64)
        if acts.dim() > 2:
            flat = acts.detach().reshape(n, channels, -1).float()
            best, where = flat.max(dim=2)  # first maximum in row-major order on ties
            width = acts.shape[-1]
            ys, xs = where // width, where % width
        else:
            best = acts.detach().float()
            ys = xs = torch.full_like(best, -1, dtype=torch.int64)
        best = torch.nan_to_num(best.to(device), nan=float("-inf"))
        return self.merge(TopK(best.T.contiguous(), indices.expand(channels, n).contiguous(),
                               ys.to(device).T.contiguous(), xs.to(device).T.contiguous()))

    def merge(self, other: "TopK") -> "TopK":
        """The top-k of the union of two sets of entries (k of ``self``); an image appears at most once per
        channel in each, so (value, image) orders entries totally."""
        other = other.to(self.values.device)
        values = torch.cat([self.values, other.values], dim=1)
        images = torch.cat([self.images, other.images], dim=1)
        if self.images.min() >= 0 and other.images.min() > self.images.max():
            # The usual case (images scanned in order, no empty slot left): ties already stand lower image first,
            # so one stable sort by value keeps them so.
            order = torch.sort(values, dim=1, descending=True, stable=True).indices
        else:
            # Image ascending first (empty slots, image -1, after every real one), then value descending.
            keys = torch.where(images < 0, torch.iinfo(torch.int64).max, images)
            order = torch.sort(keys, dim=1, stable=True).indices
            order = order.gather(1, torch.sort(values.gather(1, order), dim=1, descending=True, stable=True).indices)
        top = order[:, : self.k]
        ys = torch.cat([self.ys, other.ys], dim=1).gather(1, top)
        xs = torch.cat([self.xs, other.xs], dim=1).gather(1, top)
        return TopK(values.gather(1, top), images.gather(1, top), ys, xs)

    def to(self, device) -> "TopK":
        return TopK(self.values.to(device), self.images.to(device), self.ys.to(device), self.xs.to(device))

    def state(self) -> dict[str, torch.Tensor]:
        return {"values": self.values.cpu(), "images": self.images.cpu(), "ys": self.ys.cpu(), "xs": self.xs.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device="cpu") -> "TopK":
        return cls(state["values"].to(device), state["images"].to(device), state["ys"].to(device),
                   state["xs"].to(device))
