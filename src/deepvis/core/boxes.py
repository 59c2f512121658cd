"""Box geometry on pictures: cutting a box out of an array (padded where it leaves it) and growing a box to show
context around it. A box is ``(top, left, bottom, right)`` in pixels, bottom and right exclusive."""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]


def crop_box(array: np.ndarray, box: Box, fill: float = 0.0) -> np.ndarray:
    """``array[top:bottom, left:right]`` of an HxWxC array, padded with ``fill`` where the box leaves it."""
    top, left, bottom, right = box
    height, width = array.shape[:2]
    if top >= 0 and left >= 0 and bottom <= height and right <= width:  # inside: a copy of the slice
        return array[top:bottom, left:right].copy()
    out = np.full((bottom - top, right - left) + array.shape[2:], fill, dtype=array.dtype)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = array[y0:y1, x0:x1]
    return out


def context_box(box: Box, min_size: int) -> Box:
    """``box`` grown around its centre to at least ``min_size`` pixels a side (and one more pixel each side for an
    outline), when it is smaller: the context a tiny receptive field is shown in."""
    top, left, bottom, right = box
    grown = []
    for low, high in ((top, bottom), (left, right)):
        extent = high - low
        if extent >= min_size:
            grown.append((low, high))
            continue
        wanted = max(min_size, extent + 2)
        low -= (wanted - extent) // 2
        grown.append((low, low + wanted))
    (top, bottom), (left, right) = grown
    return top, left, bottom, right
