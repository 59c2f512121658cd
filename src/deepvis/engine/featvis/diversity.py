"""The diversity term shared by the methods that make several images (copies) per target: the mean cosine
similarity between the Gram matrices of the copies of each target, at the target layers (Olah et al. 2017's
"diversity"; lower is more diverse). A copy seen through several views per step (MACO's crops) is represented by
the mean Gram matrix of its views."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def diversity_penalty(by_layer: dict[str, tuple[list[int], torch.Tensor]], copy_of: Callable[[int], int],
                      copies: int) -> torch.Tensor:
    """The summed, over targets and layers, mean pairwise cosine similarity of the Gram matrices of each target's
    copies. ``by_layer``: layer -> (the batch rows, their activations), as :func:`objectives.evaluate` gives them;
    ``copy_of(row)``: the copy (image) a batch row shows, copy ``c`` belonging to target ``c // copies``."""
    total = None
    for rows, acts in by_layer.values():
        if acts.dim() != 4 or copies < 2:
            continue
        flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(acts.shape[0], -1), dim=1)
        owners = [copy_of(r) for r in rows]
        for target in sorted({c // copies for c in owners}):
            mine = [grams[[j for j, c in enumerate(owners) if c == copy]].mean(0)
                    for copy in range(target * copies, (target + 1) * copies) if copy in owners]
            if len(mine) > 1:
                g = F.normalize(torch.stack(mine), dim=1)
                similarity = g @ g.T
                term = (similarity.sum() - similarity.diagonal().sum()) / len(mine)
                total = term if total is None else total + term
    if total is None:
        first = next(iter(by_layer.values()), (None, None))[1]
        return first.new_zeros(()) if first is not None else torch.zeros(())
    return total


def diversity_term(weight: float, copies: int, views: int = 1) -> Callable:
    """The loop's extra loss term (:class:`loop.Ascent`): ``weight`` times :func:`diversity_penalty` of the
    evaluation, batch row ``r`` showing copy ``r // views`` (``views`` rows per copy: MACO's crops)."""
    return lambda _images, evaluation: weight * diversity_penalty(evaluation.by_layer, lambda row: row // views,
                                                                  copies)
