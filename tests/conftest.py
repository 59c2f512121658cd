"""Shared pytest fixtures: keep them generic and small."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def model():
    """The bundled default model (EfficientNet-Lite0, ImageNet), loaded once per test module."""
    import deepvis

    return deepvis.load_model()


@pytest.fixture(scope="module")
def single_thread_torch():
    """Torch on one thread for a module's tests: tiny inputs gain nothing from more, and on a busy machine (tests
    running side by side with subprocesses) two spinning threads can make a forward pass 10-40 times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def skimage_pngs(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's chelsea (a cat), coffee (an espresso) and camera (a cameraman on a tripod) as PNG files."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    folder = tmp_path_factory.mktemp("skimage")
    paths = {}
    for name in ("chelsea", "coffee", "camera"):
        paths[name] = folder / f"{name}.png"
        Image.fromarray(getattr(skimage_data, name)()).save(paths[name])
    return paths
