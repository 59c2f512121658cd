"""The house's floors (docs/architecture.md): every module imports by its own name, the torch-free floors stay light,
modules stay small and import at their top. The direction of imports itself is checked by ``lint-imports`` in CI
(the contracts in pyproject.toml)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import deepvis

SRC = Path(deepvis.__file__).parent
FLOORS = ("core", "pixels", "models", "engine", "store", "jobs", "apps")
MAX_LINES = 400
OPTIONAL = "# optional dependency"


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(deepvis.__path__, "deepvis.") if m.name != "deepvis.__main__")


def test_every_module_imports_by_its_own_name():
    """The package root re-exports lazily, so no public name shadows a subpackage: ``import deepvis.optimize.evaluate``
    once raised ImportError because the root bound the function ``optimize`` over the package ``deepvis.optimize``."""
    modules = _modules()
    assert {m.split(".")[1] for m in modules} >= set(FLOORS)
    for name in modules:
        assert importlib.import_module(name).__name__ == name
    # the function stays reachable under its own name beside the packages it lives in
    assert callable(deepvis.optimize) and deepvis.optimize.__module__ == "deepvis.engine.featvis"
    importlib.import_module("deepvis.jobs.evaluate")
    assert callable(deepvis.optimize)
    for name in deepvis.__all__:
        assert getattr(deepvis, name) is not None, name


def test_a_torch_free_floor_loads_no_torch_and_no_neighbours():
    """``import deepvis.core.units`` once loaded 39 deepvis modules and torch (the root imported every public name)."""
    code = ("import sys, deepvis.core.units; "
            "print(sorted(m for m in sys.modules if m.startswith('deepvis'))); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert eval(out[0]) == ["deepvis", "deepvis.core", "deepvis.core.errors", "deepvis.core.units",
                            "deepvis.core.version"]
    assert out[1] == "False"
    code = "import sys, deepvis.store, deepvis.pixels.render; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_modules_are_small():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in SRC.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def _function_imports(tree: ast.AST, lines: list[str]):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)) and OPTIONAL not in lines[inner.lineno - 1]:
                    yield inner.lineno


def test_imports_are_at_the_top_except_optional_dependencies():
    """Function-level imports hid cycles; only loaders of optional dependencies (timm, onnx, ...) keep them, each
    marked ``# optional dependency``."""
    found = {}
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        where = list(_function_imports(ast.parse(text), lines))
        if where:
            found[str(path.relative_to(SRC))] = where
    assert found == {}


@pytest.mark.parametrize("floor", ["core", "pixels", "store"])
def test_the_torch_free_floors_name_no_torch(floor):
    for path in (SRC / floor).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n == "torch" or n.startswith("torch.")], path
