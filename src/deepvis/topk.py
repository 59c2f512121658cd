"""Streaming per-channel top-k over a dataset, tensors only: the heart of find-max.

Each image contributes, per channel, one entry: its spatial maximum and where it is. Entries are ordered by value
(highest first), ties broken by the lower image index, then the lower position — a total order, so the result is
the same whatever the batch size, the order batches arrive in, or how many processes share the work.
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
        """The top-k of the union of two sets of entries (k of ``self``)."""
        values = torch.cat([self.values, other.values.to(self.values.device)], dim=1)
        images = torch.cat([self.images, other.images.to(self.images.device)], dim=1)
        ys = torch.cat([self.ys, other.ys.to(self.ys.device)], dim=1)
        xs = torch.cat([self.xs, other.xs.to(self.xs.device)], dim=1)
        # Sort keys from least to most significant with stable sorts: position, image, then value (descending).
        # Empty slots (image -1) sort after every real entry of equal (-inf) value.
        order = torch.argsort(xs, dim=1, stable=True)
        for key, descending in ((ys, False), (torch.where(images < 0, images.max() + 1, images), False),
                                (values, True)):
            order = order.gather(1, torch.argsort(key.gather(1, order), dim=1, stable=True, descending=descending))
        top = order[:, : self.k]
        return TopK(values.gather(1, top), images.gather(1, top), ys.gather(1, top), xs.gather(1, top))

    def to(self, device) -> "TopK":
        return TopK(self.values.to(device), self.images.to(device), self.ys.to(device), self.xs.to(device))

    def state(self) -> dict[str, torch.Tensor]:
        return {"values": self.values.cpu(), "images": self.images.cpu(), "ys": self.ys.cpu(), "xs": self.xs.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device="cpu") -> "TopK":
        return cls(state["values"].to(device), state["images"].to(device), state["ys"].to(device),
                   state["xs"].to(device))
