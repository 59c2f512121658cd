"""Layer names: the ONNX node names, and the source network's module paths where the exporter left them.

Every run-time node is a submodule named after the node: ``.`` (not allowed in module names) and ``:`` (the unit
separator) written as ``_``, a leading ``/`` dropped; unnamed nodes are called ``<OpType>_<index>``.

The module-path view: the TorchScript exporter names nodes after the module scope they ran in
(``/blocks/blocks.0/mlp/act/Mul_1``), the dynamo exporter records it in the node's metadata
(``pkg.torch.onnx.name_scopes``: ``['', 'blocks', 'blocks.0', 'blocks.0.mlp', 'blocks.0.mlp.act', 'gelu']``). Where a
source module's nodes have exactly one output used outside it, that output is offered again under the module path:
a :class:`ModuleScope` submodule nested as in the source network (``net.blocks[0].mlp.act``), called on the
node's output and returning it unchanged. So ``blocks.0.mlp.act:3`` and ``blocks.0.attn.qkv:7`` address the same
tensors as in the source network, hooks and backward passes see the same values, and the node names stay valid.
Scopes are nested as the module calls were: a module called twice (a shared ``relu``) gets its second call's
scope as the exporter named it (``relu_1``).
"""

from __future__ import annotations

import ast

from torch import nn


class ModuleScope(nn.Module):
    """A source module's output under its module path: identity on the output of the node that computes it.
    Subclassed per source class name (``GELU``, ``Block``) so the catalog shows the source type."""

    def forward(self, x):
        return x


_SCOPE_CLASSES: dict[str, type] = {}


def scope_class(name: str) -> type:
    name = name if name.isidentifier() else "ModuleScope"
    if name not in _SCOPE_CLASSES:
        _SCOPE_CLASSES[name] = type(name, (ModuleScope,), {"__module__": __name__})
    return _SCOPE_CLASSES[name]


def node_module_name(node_name: str, op: str, index: int) -> str:
    return node_name.lstrip("/").replace(".", "_").replace(":", "_") or f"{op}_{index}"


def source_scope(proto) -> tuple[str, list[tuple[str, str]]]:
    """The source module path a node ran in ('' for the network itself or none known), and (path, class name)
    for each enclosing module where the exporter recorded classes."""
    meta = {p.key: p.value for p in proto.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            names = ast.literal_eval(scopes)
            classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
        except (ValueError, SyntaxError):
            return "", []
        paths = [str(n) for n in names[1:-1]]
        kinds = [str(c).rpartition(".")[2] for c in classes[1:len(names) - 1]]
        return (paths[-1] if paths else ""), list(zip(paths, kinds + [""] * (len(paths) - len(kinds))))
    if proto.name.startswith("/"):  # TorchScript exporter: /blocks/blocks.0/attn/qkv/MatMul
        parts: list[str] = []  # a container's children are named "<container>.<index>": /layer2/layer2.0/...
        for part in proto.name.split("/")[1:-1]:
            if parts and part.startswith(parts[-1] + "."):
                parts[-1] = part
            else:
                parts.append(part)
        return ".".join(parts), []
    return "", []


def prefixes(path: str) -> list[str]:
    """``a.b.c`` -> ``['a', 'a.b', 'a.b.c']``."""
    parts = path.split(".") if path else []
    return [".".join(parts[:i + 1]) for i in range(len(parts))]


def scope_outputs(plan: list[tuple[str, str, list[str], list[str]]], graph_outputs: set[str]) -> dict[str, str]:
    """Module path -> the node (module name) whose single output is the module's only output used outside it.

    ``plan``: (module name, scope path, input names, output names) of each run-time node, in order."""
    producer: dict[str, tuple[str, int, str]] = {}  # tensor -> (node, its output count, its scope)
    leaving: dict[str, set[str]] = {}  # scope -> its tensors used outside it
    for name, scope, _, outputs in plan:
        for output in outputs:
            producer[output] = (name, len(outputs), scope)
        for prefix in prefixes(scope):
            leaving.setdefault(prefix, set())
    for _, scope, inputs, _ in plan:
        mine = set(prefixes(scope))
        for tensor in inputs:
            if tensor in producer:
                for owner in prefixes(producer[tensor][2]):
                    if owner not in mine:
                        leaving[owner].add(tensor)
    for tensor in graph_outputs & set(producer):
        for owner in prefixes(producer[tensor][2]):
            leaving[owner].add(tensor)
    result = {}
    for owner, tensors in leaving.items():
        if len(tensors) == 1:
            node, count, _ = producer[next(iter(tensors))]
            if count == 1:
                result[owner] = node
    return result
