"""Write docs/onnx-coverage.md from the ONNX importer's operator table (src/deepvis/models/onnx/ops.py).

    PYTHONPATH=src python docs/make_onnx_coverage.py

tests/models/test_onnx.py checks that the page matches the code.
"""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).with_name("onnx-coverage.md")


def render() -> str:
    from deepvis.models.onnx import coverage
    from deepvis.models.onnx.fold import NOT_FOLDED

    lines = [
        "# ONNX operators deepvis imports",
        "",
        "Generated from `src/deepvis/models/onnx/ops.py` by `docs/make_onnx_coverage.py`; do not edit by hand.",
        "",
        "Any node whose inputs are all known when the file is loaded (initializers, `Constant`s, the `Shape` or",
        "`Size` of any tensor at the model's input size, and whatever is computed from those) is evaluated once by",
        "`onnx.reference.ReferenceEvaluator`, whatever its operator (except "
        + ", ".join(f"`{op}`" for op in sorted(NOT_FOLDED)) + "), and needs no entry below.",
        "An `If` whose condition is known is replaced by its chosen branch. The nodes left run as PyTorch modules:",
        "",
        "| operator | supported |",
        "|---|---|",
    ]
    lines += [f"| {op} | {notes or 'yes'} |" for op, notes in coverage()]
    lines += [
        "",
        "Operators from other domains (`com.microsoft`, ...) and `Loop` / `Scan` are not supported; loading names",
        "the first five unsupported nodes. A node a converter cannot take (a computed `Slice` bound, `Resize`",
        "without scales or sizes) fails the load with one line naming the node, its operator and what is missing.",
        "",
        "Node groups converted back to the source module (src/deepvis/models/onnx/fuse.py): `MatMul` by a",
        "constant + `Add` of a constant vector -> `nn.Linear`; `ReduceMean`, `Sub`, `Pow`, `ReduceMean`, `Add`,",
        "`Sqrt`, `Div` (, `Mul`, `Add`) -> `nn.LayerNorm` (TorchScript exports before opset 17).",
        "",
        "## Layer names",
        "",
        "Every run-time node is a layer named after the node (`blocks/blocks_0/mlp/fc1/MatMul`, dynamo's",
        "`node_gelu_1`). Where the exporter recorded the source module (TorchScript in the node name, dynamo in the",
        "`pkg.torch.onnx.name_scopes` metadata) and the module's nodes have one output used outside it, that output",
        "is also a layer under the source module path, nested as in the source network: `blocks.0.mlp.act:3`,",
        "`layer2.0:5@3,3`, `head:7` address the same tensors in the import as in the source network. The layers",
        "shown by default use the module path where the node name does not read as one.",
        "",
        "## Batch size and input size",
        "",
        "Files are usually exported at batch size 1. Shapes folded at load time are evaluated at the file's batch",
        "size and one more; entries that follow the batch stay linear in it. Constant `Reshape` targets on",
        "batch-carrying tensors get the batch on the axis found by running a probe at both batch sizes. The graph",
        "runs at the input size it was folded at (the file's, or 224x224 when the file leaves it open).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
