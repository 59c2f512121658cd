"""A loaded network with everything the toolbox needs to show it: preprocessing, labels, layer choices."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from deepvis.core.errors import ImageError
from deepvis.models.catalog import LayerInfo, build_catalog, find_layer, is_hidden
from deepvis.models.preprocessing import Preprocessing
from deepvis.pixels.images import load_image


@dataclass
class Model:
    """An ``nn.Module`` in eval mode with frozen parameters, plus how to feed and read it.

    ``outputs`` says whether the network returns ``logits`` or ``probs`` (class probabilities).
    ``default_layers`` are the layers shown first (``None``: chosen from the layer catalog).
    ``layouts``: a layer's layout where detection cannot tell (``nhwc``, ``tokens+1``...; see
    :mod:`deepvis.models.layouts`).
    ``hidden_layers``: name patterns (``fnmatch``, e.g. ``*_split_*``) of layers never shown by default.
    ``label_layers``: layers whose channels are the classes (``None``: those with one value per label).
    ``prob_layer``: the layer whose output holds the class probabilities (``None``: the network's output).
    ``store``: the per-unit store shown by default; ``store_remap`` shows another layer's pictures for a layer
    (e.g. ``pool1`` -> ``conv1``).
    ``recipe``: the ``load_model`` arguments that made it, files as absolute paths (:mod:`deepvis.models.recipe`;
    ``None`` for a model made in Python). ``random_weights``: True when no weights were given (structure only).
    """

    net: nn.Module
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    labels: list[str] | None = None
    spec: str = "<module>"
    outputs: Literal["logits", "probs"] = "logits"
    default_layers: list[str] | None = None
    layouts: dict[str, str] = field(default_factory=dict)
    pretty_names: dict[str, str] = field(default_factory=dict)
    hidden_layers: list[str] = field(default_factory=list)
    label_layers: list[str] | None = None
    prob_layer: str | None = None
    store: str | None = None
    store_remap: dict[str, str] = field(default_factory=dict)
    recipe: dict | None = field(default=None, repr=False)
    random_weights: bool = False
    _catalog: list[LayerInfo] | None = field(default=None, repr=False)
    #: receptive fields measured so far, by (input size, largest input, layer): they depend on the architecture
    #: and input size only, so a warm process (the toolbox, repeated scans) measures each once
    _fields: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        """The device of the network's first parameter (or buffer; cpu when it has neither). O(1): asked on every
        input, so it looks at one tensor, not all of them."""
        tensor = next(iter(self.net.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.net.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def to(self, device: str | torch.device) -> "Model":
        """Move the network to a device (in place) and return self."""
        self.net.to(device)
        return self

    def label(self, index: int) -> str:
        """The label of an output index, or ``'class N'`` when the model has no labels."""
        if self.labels and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def layers(self) -> list[LayerInfo]:
        """The layer catalog (computed once, on the first call)."""
        if self._catalog is None:
            self._catalog = list_layers(self)
        return self._catalog

    def layer_names(self) -> list[str]:
        return [info.name for info in self.layers()]

    def hidden(self, layer: str) -> bool:
        """True for a layer matched by ``hidden_layers`` (left out of the default layers and the toolbox)."""
        return is_hidden(layer, self.hidden_layers)

    def is_label_layer(self, layer: str, shape: tuple[int, ...] | None) -> bool:
        """True when the channels of ``layer`` (output ``shape``) are the classes, so units can show labels."""
        if not self.labels:
            return False
        if self.label_layers is not None:
            return layer in self.label_layers
        return shape == (len(self.labels),)

    def input(self, image, resize: str | None = None) -> torch.Tensor:
        """Any image (path, bytes, PIL, array; a tensor is taken as preprocessed) -> (1, C, H, W) input."""
        return model_input(self, image, resize)


def list_layers(model: Model, input_size: tuple[int, int] | None = None) -> list[LayerInfo]:
    """The layer catalog of ``model`` at its input size (or ``input_size``), made afresh: its network, channels,
    ``layouts``, ``default_layers`` and ``hidden_layers`` (see :func:`deepvis.models.catalog.build_catalog`;
    ``deepvis.engine.probe.list_layers`` also takes a bare ``nn.Module``)."""
    pre = model.preprocessing
    return build_catalog(model.net, pre.channels, input_size or pre.input_size, model.device, model.layouts,
                         model.default_layers, model.hidden_layers)


def default_layers(model: Model) -> list[str]:
    """Names of the layers shown first, in forward order."""
    return [info.name for info in model.layers() if info.default]


def layer_info(model: Model, layer: str) -> LayerInfo:
    """The catalog entry of a probeable layer of ``model``, or a clear error naming it (with close matches)."""
    return find_layer(model.layers(), layer)


def as_model(model: Model | nn.Module) -> Model:
    """``model`` itself, or a bare ``nn.Module`` wrapped in a :class:`Model` with default preprocessing."""
    return model if isinstance(model, Model) else Model(net=model)


def weights_hash(model: Model) -> str:
    """A short fingerprint of the network's parameters and buffers (which model made a store's pictures). Hashed
    afresh on every call (~10 ms for the bundled model): a cache keyed on torch's version counters would miss a
    weight changed through ``.data`` or numpy, such as one unit knocked out, and credit the old network with the
    changed one's results."""
    digest = hashlib.sha256()
    for name, tensor in model.net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy())  # its buffer: not copied again
    return digest.hexdigest()[:16]


def prepare(net: nn.Module) -> nn.Module:
    """Eval mode, frozen parameters, and no in-place activations (so hooks see each layer's own output), in place."""
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    if isinstance(net, torch.jit.ScriptModule):
        return net  # compiled: its attributes are constants, and it cannot be hooked anyway
    for module in net.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    return net


def is_prepared(net: nn.Module) -> bool:
    """True when :func:`prepare` would change nothing: every module in eval mode, every parameter frozen, no
    in-place flag set."""
    return not any(m.training or getattr(m, "inplace", None) is True for m in net.modules()) \
        and not any(p.requires_grad for p in net.parameters())


def prepared_view(net: nn.Module) -> nn.Module:
    """:func:`prepare` without touching ``net``: a copy of its module tree (own train/eval modes, in-place flags,
    hooks) whose parameters are frozen aliases of ``net``'s (the same memory, so an optimizer step or a weight
    changed in place shows at once) and whose buffers are ``net``'s own tensors. ``net`` itself where preparing it
    changes nothing, or where it is compiled (TorchScript: prepared in place)."""
    if is_prepared(net) or isinstance(net, torch.jit.ScriptModule):
        return prepare(net)
    memo: dict[int, object] = {id(b): b for b in net.buffers()}
    memo.update({id(p): nn.Parameter(p.detach(), requires_grad=False) for p in net.parameters()})
    return prepare(copy.deepcopy(net, memo))


def model_input(model: Model, image, resize: str | None = None) -> torch.Tensor:
    """Any image (path, bytes, PIL, array) -> a (1, C, H, W) model input on the model's device.

    A ``torch.Tensor`` is taken as already preprocessed: (C, H, W) or (N, C, H, W).
    """
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image.unsqueeze(0)
        if x.dim() != 4:
            raise ImageError(f"a tensor input must be (C, H, W) or (N, C, H, W), got shape {tuple(image.shape)}")
        return x.to(model.device, torch.float32)
    rgb = load_image(image)
    return model.preprocessing.to_tensor(rgb, resize).unsqueeze(0).to(model.device)
