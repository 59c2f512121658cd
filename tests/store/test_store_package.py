"""The store package: its public names stay importable from ``deepvis.store``, it loads no torch and nothing of the
floors above it, and each of its modules stays one idea of at most 400 lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import deepvis.store as store_package

PUBLIC = ("Store", "Manifest", "LayerRecord", "SkippedImage", "CROP_KINDS", "SPRITE_KINDS", "CROPS_SETTINGS",
          "UNIT_PICTURES", "FORMAT_VERSION", "SPRITE_TILE", "layer_dirname", "sprite_tile", "atomic_write_bytes")


def test_the_public_names_are_importable_from_the_package():
    from deepvis.core.files import atomic_write_bytes

    assert all(hasattr(store_package, name) for name in PUBLIC)
    assert store_package.atomic_write_bytes is atomic_write_bytes
    assert store_package.layer_dirname("a~b/c") == "a%7Eb%2Fc"


def test_importing_the_store_loads_no_torch_and_no_higher_floor():
    code = ("import sys, deepvis.store; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'deepvis.models', "
            "'deepvis.engine', 'deepvis.jobs', 'deepvis.apps'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_store_module_is_at_most_400_lines():
    folder = Path(store_package.__file__).parent
    lengths = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in folder.glob("*.py")}
    assert len(lengths) > 1 and max(lengths.values()) <= 400, lengths
