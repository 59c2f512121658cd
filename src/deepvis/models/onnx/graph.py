"""The ONNX graph as an ``nn.Module``: known values folded, every other node one submodule, run in file order.

Building walks the nodes once, in order, with a probe: a random input at the file's batch size and at one more
runs through each converted module as it is made, so the shape of every tensor is known (for ``Shape`` nodes, SAME
pads, normalized shapes) and a node that fails on its inputs is named when the file is loaded, not in the middle
of a visualization. Nodes whose inputs are all known are folded (fold.py); an ``If`` with a known condition is
replaced by the nodes of its chosen branch.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch import nn

from deepvis.core.errors import ModelError, one_line
from deepvis.models.onnx import fuse
from deepvis.models.onnx.fold import NOT_FOLDED, Evaluator, Known, fold
from deepvis.models.onnx.names import ModuleScope, node_module_name, scope_class, scope_outputs, source_scope
from deepvis.models.onnx.node import BatchAxis, Node
from deepvis.models.onnx.ops import CONVERTERS

#: Operators of activation functions: a module-path scope holding one is shown by default.
_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
                "Tanh", "Erf", "Gelu", "Softplus", "Mish", "Softmax"}

#: Spatial size used to fold shapes when the file's input size is not fixed (the default input size).
DEFAULT_SIZE = (224, 224)


class OnnxGraph(nn.Module):
    """An ONNX graph run node by node; every run-time node is a submodule named after it, and source module
    paths are offered as :class:`~.names.ModuleScope` submodules (see names.py)."""

    def __init__(self, proto, source: str = "<onnx>", input_size: tuple[int, int] | None = None):
        super().__init__()
        from onnx import numpy_helper  # optional dependency

        graph = proto.graph
        opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in proto.opset_import}
        opset = opsets.get("", 13)
        evaluator = Evaluator(opsets, proto.functions)
        known: dict[str, Known] = {t.name: Known(numpy_helper.to_array(t)) for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in known]
        if len(inputs) != 1:
            raise ModelError(f"'{source}' has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                             "deepvis feeds a network one image tensor")
        self._input, self._output = inputs[0].name, graph.output[0].name
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
        self.input_shape = tuple(dims[1:4]) if len(dims) == 4 else (0, 0, 0)
        if len(dims) < 3 or not dims[1]:
            raise ModelError(f"'{source}': the input '{self._input}' has shape {dims or '?'}; deepvis needs an "
                             "image input (N, C, H, W) with a fixed number of channels")
        self._file_batch = dims[0] or 1
        spatial = dims[2:] if all(dims[2:]) else list(input_size or DEFAULT_SIZE)[:len(dims) - 2]
        #: the input size everything was folded at: the graph runs at this size only (receptive_field.py reads it)
        self.fixed_input_size = tuple(int(v) for v in spatial)
        generator = torch.Generator().manual_seed(0)
        first = torch.randn(self._file_batch, dims[1], *spatial, generator=generator)
        probe: dict[str, list[torch.Tensor]] = {self._input: [  # the second: one more sample after the same ones
            first, torch.cat([first, torch.randn(1, dims[1], *spatial, generator=generator)])]}

        build = _Build(proto, evaluator, known, probe)
        self._ops: dict[str, str] = {}  # module name -> ONNX operator
        self._readable: set[str] = set()  # node names that already read as the module path (TorchScript's)
        self._plan: list[tuple[str, list[str], list[str], list[nn.Module]]] = []
        self._templates: dict[str, Known] = {}
        scopes: dict[str, str] = {}  # module name -> source scope path
        classes: dict[str, str] = {}  # source scope path -> source class name (dynamo exporter)
        constants: dict[str, torch.Tensor] = {}
        unsupported = []
        for index, proto_node in build.nodes():
            if not domain_is_onnx(proto_node) or proto_node.op_type not in CONVERTERS:
                domain = "" if domain_is_onnx(proto_node) else f"{proto_node.domain}."
                unsupported.append(f"{domain}{proto_node.op_type} (node '{proto_node.name or index}')")
                build.missing.update(proto_node.output)
                continue
            node = Node(proto_node, opset, const=build.const, static=build.static, shape=build.shape,
                        batch=build.batch)
            module, used, outputs = build.convert(node)
            name = self._unique(node_module_name(proto_node.name, node.op, index))
            self.add_module(name, module)
            outputs = build.run_probe(node, module, used, outputs)
            for used_name in used:
                if used_name in known:
                    if known[used_name].constant:
                        constants[used_name] = known[used_name].tensor()
                    else:
                        self._templates[used_name] = known[used_name]
            self._plan.append((name, used, outputs, []))
            scopes[name], enclosing = source_scope(proto_node)
            classes.update(enclosing)
            self._ops[name] = node.op
            if proto_node.name.startswith("/") and scopes[name]:
                self._readable.add(name)
            build.done(proto_node, keep=self._output)
        if unsupported:
            raise ModelError(f"'{source}' uses ONNX operators deepvis cannot convert: {', '.join(unsupported[:5])}"
                             f"{' ...' if len(unsupported) > 5 else ''}")
        if self._output in known:
            raise ModelError(f"'{source}': the output '{self._output}' does not depend on the input")
        self._constant_names = {}
        for number, name in enumerate(sorted(constants)):  # constants read at run time: buffers
            self.register_buffer(f"_const_{number}", constants[name], persistent=False)
            self._constant_names[name] = f"_const_{number}"
        self.scope_paths = self._add_scopes(scopes, classes)
        self._scopes = scopes

    def _unique(self, name: str) -> str:
        base, count = name, 1
        while name in self._modules or hasattr(self, name):
            count += 1
            name = f"{base}_{count}"
        return name

    def _add_scopes(self, scopes: dict[str, str], classes: dict[str, str]) -> dict[str, str]:
        """Register the module-path view (names.py); returns module path -> node module name."""
        plan = [(name, scopes[name], inputs, outputs) for name, inputs, outputs, _ in self._plan]
        targets = scope_outputs(plan, {self._output})
        calls = {name: aliases for name, _, _, aliases in self._plan}
        added = {}
        for path in sorted(targets, key=lambda p: (p.count("."), p)):
            parent, parts, ok = self, path.split("."), True
            for depth, part in enumerate(parts):
                child = parent._modules.get(part)
                if child is None:
                    if not part or ":" in part or "/" in part or hasattr(parent, part):
                        ok = False
                        break
                    child = ModuleScope()
                    parent.add_module(part, child)
                elif not isinstance(child, ModuleScope):
                    ok = False
                    break
                parent = child
            if not ok or type(parent) is not ModuleScope:
                continue
            node = targets[path]
            parent.__class__ = scope_class(classes.get(path) or type(self._modules[node]).__name__)
            calls[node].append(parent)
            added[path] = node
        for aliases in calls.values():  # innermost module first, as the source network returns
            aliases.reverse()
        return added

    def default_layers(self, guessed: set[str]) -> list[str]:
        """The layers shown first, from those the catalog guessed among the node layers: a node whose name does
        not read as its module path (dynamo's ``node_relu_3``) is shown by its module path; module paths are added
        for blocks of containers (``blocks.0``, ``layer1.1``) and for activations exported as several nodes
        (GELU as ``Div``/``Erf``/``Add``/``Mul``)."""
        alias_of = {node: path for path, node in self.scope_paths.items()}
        chosen = []
        for name in guessed:
            keep = name in self._readable or name not in alias_of
            chosen.append(name if keep else alias_of[name])
        paths = set(self.scope_paths)
        for path, node in self.scope_paths.items():
            if node in guessed:
                continue
            leaf = not any(other.startswith(path + ".") for other in paths)
            ops = {self._ops[n] for n, scope in self._scopes.items() if scope == path or scope.startswith(path + ".")}
            if (not leaf and path.rpartition(".")[2].isdigit()) or (leaf and ops & _ACTIVATIONS):
                chosen.append(path)
        return chosen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.fixed_input_size:
            raise ModelError(f"this ONNX graph runs at input size {'x'.join(map(str, self.fixed_input_size))} "
                             f"(its shapes were computed for it), got {'x'.join(map(str, x.shape[2:]))}")
        values: dict[str, torch.Tensor] = {self._input: x}
        for name, known in self._templates.items():
            values[name] = known.for_batch(x.shape[0], self._file_batch).to(x.device)
        for name, inputs, outputs, aliases in self._plan:
            args = [values[i] if i in values else getattr(self, self._constant_names[i]) for i in inputs]
            out = self._modules[name](*args)
            if len(outputs) == 1:
                for alias in aliases:
                    out = alias(out)
                values[outputs[0]] = out
            else:
                values.update((o, v) for o, v in zip(outputs, out) if o)
        return values[self._output]


class _Build:
    """The state of one walk over the nodes: known values, probe tensors (at the file's batch size and one
    more), which nodes were fused or inlined, and which values are missing after an unsupported node."""

    def __init__(self, proto, evaluator: Evaluator, known: dict[str, Known], probe: dict[str, list[torch.Tensor]]):
        self.graph, self.evaluator, self.known, self.probe = proto.graph, evaluator, known, probe
        self.uses = _use_counts(proto.graph)
        self.missing: set[str] = set()
        self.consumers: dict[str, list] = {}
        for node in proto.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.skip: set[int] = set()
        for node in proto.graph.node:  # Constant nodes first: fusing looks ahead at their values
            if node.op_type == "Constant" and not node.input:
                known.update(zip(node.output, fold(evaluator, node, [])))
                self.skip.add(id(node))

    def nodes(self):
        """(index, node) of each node left to convert: constants are folded and known Ifs inlined on the way."""
        queue, index = deque(self.graph.node), 0
        while queue:
            node = queue.popleft()
            index += 1
            if id(node) in self.skip:
                continue
            names = [i for i in node.input if i]
            if any(i in self.missing for i in names):  # after an unsupported node
                self.missing.update(node.output)
                continue
            if node.op_type == "If" and names[0] in self.known and self.known[names[0]].constant:
                condition = bool(self.known[names[0]].value.flatten()[0])
                queue.extendleft(reversed(_inline_branch(node, condition, self.known)))
                continue
            folded = self._fold(node, names)
            if folded is not None:
                self.known.update(zip(node.output, folded))
                continue
            yield index, node

    def _fold(self, node, names: list[str]) -> list[Known] | None:
        dynamic = [i for i in names if i not in self.known]
        if node.op_type in ("Shape", "Size") and dynamic:  # shapes are known: the probe has them
            return fold(self.evaluator, node, [(tuple(self.probe[i][0].shape), tuple(self.probe[i][1].shape),
                                                np.float32) for i in node.input])
        if not dynamic and node.op_type not in NOT_FOLDED and domain_is_onnx(node):
            return fold(self.evaluator, node, [self.known[i] if i else None for i in node.input])
        return None

    def const(self, name: str) -> torch.Tensor | None:
        value = self.known.get(name)
        return value.tensor() if value is not None and value.constant else None

    def static(self, name: str) -> torch.Tensor | None:
        return self.known[name].tensor() if name in self.known else None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.probe[name][0].shape) if name in self.probe else tuple(self.known[name].value.shape)

    def batch(self, name: str) -> BatchAxis | None:
        return BatchAxis.between(*self.probe[name]) if name in self.probe else None

    def convert(self, node: Node) -> tuple[nn.Module, list[str], list[str]]:
        """(module, names of its inputs, names of its outputs) for a node, or for the group it starts."""
        proto = node.proto
        group = fuse.layer_norm(proto, self.consumers, self.known, self.shape(node.inputs[0])) \
            if node.op == "ReduceMean" else None
        if group is not None:  # TorchScript's nn.LayerNorm before opset 17: one nn.LayerNorm
            module, used, outputs = group[0], [0], [group[2]]
            self.skip.update(id(n) for n in group[1])
        else:
            (module, used), outputs = CONVERTERS[node.op][0](node), list(proto.output)
        add = fuse.bias_add(proto, module, self.consumers, self.known)
        if add is not None:  # MatMul by a constant, then + a constant vector: one nn.Linear with bias
            bias = add.input[1] if add.input[0] == outputs[0] else add.input[0]
            module.bias = nn.Parameter(self.known[bias].tensor().flatten().float())
            self.skip.add(id(add))
            outputs = [add.output[0]]
        return module, [node.inputs[i] for i in used], outputs

    def run_probe(self, node: Node, module: nn.Module, used: list[str], outputs: list[str]) -> list[str]:
        """Run the new module on the probe at both batch sizes; returns the outputs it gives."""
        results = []
        for variant in (0, 1):
            args = [self.probe[n][variant] if n in self.probe else self.known[n].tensor(variant) for n in used]
            try:
                with torch.no_grad():
                    results.append(module(*args))
            except ModelError:
                raise
            except Exception as exc:
                shapes = ", ".join(str(tuple(a.shape)) for a in args)
                raise node.fail(f"fails on inputs of shapes {shapes} ({type(exc).__name__}: "
                                f"{one_line(exc, 150)})") from None
        several = isinstance(results[0], (tuple, list))
        outputs = outputs if several else outputs[:1]
        for variant, result in enumerate(results):
            for output, value in zip(outputs, result if several else [result]):
                if output:
                    self.probe.setdefault(output, [None, None])[variant] = value
        return outputs

    def done(self, proto, keep: str) -> None:
        """Free the probe values no later node reads."""
        for name in set(proto.input):
            self.uses[name] = self.uses.get(name, 1) - 1
            if self.uses[name] <= 0 and name in self.probe and name != keep:
                del self.probe[name]


def domain_is_onnx(node) -> bool:
    """True for a node of the default (ai.onnx) operator set."""
    return node.domain in ("", "ai.onnx")


def _use_counts(graph) -> dict[str, int]:
    """How many nodes read each value, in this graph and its subgraphs."""
    counts: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                for name, count in _use_counts(sub).items():
                    counts[name] = counts.get(name, 0) + count
    return counts


def _inline_branch(proto_node, condition: bool, known: dict[str, Known]) -> list:
    """The nodes of an ``If``'s chosen branch, with Identity nodes giving its outputs the If's output names."""
    from onnx import helper, numpy_helper  # optional dependency

    branch = next(a.g for a in proto_node.attribute if a.name == ("then_branch" if condition else "else_branch"))
    for tensor in branch.initializer:
        known[tensor.name] = Known(numpy_helper.to_array(tensor))
    renames = [helper.make_node("Identity", [inner.name], [outer], name=f"{proto_node.name}/{outer}")
               for inner, outer in zip(branch.output, proto_node.output)]
    return list(branch.node) + renames
