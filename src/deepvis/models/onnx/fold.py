"""Constant folding by evaluation: values known when the file is loaded, computed once by ``onnx.reference``.

A value is *known* when it is an initializer, a ``Constant``, the ``Shape`` (or ``Size``) of any tensor (shapes are
static at the model's input size), or the output of a node whose inputs are all known. Such nodes are evaluated by
onnx's own reference evaluator (``onnx.reference.ReferenceEvaluator``), never by a hand-written interpreter, and
become tensors: TensorFlow-style "same" pads, ``Slice`` bounds, ``Reshape`` / ``Expand`` targets, scales.

Shapes hold the batch size, which the file fixes (usually at 1) but the toolbox varies. So every known value is
evaluated at two batch sizes, the file's ``b`` and ``b + 1``: equal results are a :class:`Known` constant; integer
results that differ (a shape's batch entry, ``batch * heads``) are linear in the batch size and kept as
``base + slope * (N - b)``, computed for the batch ``N`` of each forward pass; other differences (a tensor whose
*shape* follows the batch) leave the node to run at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepvis.core.errors import ModelError, one_line

#: Operators never folded: random values, or control flow handled by the graph builder.
NOT_FOLDED = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
              "If", "Loop", "Scan"}


@dataclass
class Known:
    """A value known at load time: ``value`` at the file's batch size and ``other`` at one more (None: the same
    at every batch size)."""

    value: np.ndarray
    other: np.ndarray | None = None

    @property
    def constant(self) -> bool:
        return self.other is None

    def at(self, variant: int) -> np.ndarray:
        """The value at the file's batch size (variant 0) or one more (variant 1)."""
        return self.value if variant == 0 or self.other is None else self.other

    def tensor(self, variant: int = 0) -> torch.Tensor:
        return torch.from_numpy(np.array(self.at(variant), copy=True))

    def for_batch(self, batch: int, file_batch: int) -> torch.Tensor:
        """The value for a forward pass of ``batch`` samples (linear in the batch size)."""
        if self.other is None:
            return self.tensor()
        return torch.from_numpy(self.value + (self.other - self.value) * (batch - file_batch))


def known_pair(first: np.ndarray, second: np.ndarray) -> Known | None:
    """The two evaluations of one value as a :class:`Known`, or None when they cannot be one (shape or dtype
    follows the batch size, or a non-integer value differs)."""
    first, second = np.asarray(first), np.asarray(second)
    if first.shape == second.shape and first.dtype == second.dtype and np.array_equal(first, second):
        return Known(first)
    if first.shape == second.shape and first.dtype == second.dtype and np.issubdtype(first.dtype, np.integer):
        return Known(first, second)
    return None


class Evaluator:
    """Evaluates single nodes with ``onnx.reference`` at the model's opsets."""

    def __init__(self, opsets: dict[str, int], functions=()):
        self.opsets, self.functions = opsets, list(functions)

    def run(self, proto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        from onnx.reference import ReferenceEvaluator  # optional dependency

        try:
            evaluator = ReferenceEvaluator(proto, opsets=self.opsets, functions=self.functions or None)
            return [np.asarray(v) for v in evaluator.run(None, {k: v for k, v in feeds.items() if k})]
        except Exception as exc:
            raise ModelError(f"ONNX {proto.op_type} node '{proto.name or proto.op_type}': could not be evaluated "
                             f"on its constant inputs ({type(exc).__name__}: {one_line(exc, 150)})") from None


def fold(evaluator: Evaluator, proto, inputs: list[Known | np.ndarray | None]) -> list[Known] | None:
    """Evaluate ``proto`` on its known inputs (a :class:`Known`, or a bare array standing for a tensor whose shape
    only matters, for ``Shape``); None when an output cannot be a :class:`Known`."""
    names = list(proto.input)
    varies = any(isinstance(v, Known) and not v.constant for v in inputs) or any(
        isinstance(v, tuple) for v in inputs)

    def feeds(variant: int) -> dict[str, np.ndarray]:
        out = {}
        for name, value in zip(names, inputs):
            if isinstance(value, Known):
                out[name] = value.at(variant)
            elif isinstance(value, tuple):  # (shape at the file's batch size, shape at one more, dtype)
                out[name] = np.empty(value[variant], value[2])
        return out
    first = evaluator.run(proto, feeds(0))
    if not varies:
        return [Known(v) for v in first]
    second = evaluator.run(proto, feeds(1))
    pairs = [known_pair(a, b) for a, b in zip(first, second)]
    return None if any(p is None for p in pairs) else pairs
