"""Shared pytest fixtures: keep them generic and small."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest


@contextlib.contextmanager
def uvicorn_serving(app, log_level: str = "error"):
    """``app`` behind a real uvicorn server on a free loopback port, in a thread: yields (host, port)."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def serving():
    """:func:`uvicorn_serving`, for any test module: ``with serving(app) as (host, port): ...``."""
    return uvicorn_serving


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


@pytest.fixture
def noise_pngs(tmp_path) -> Path:
    """A folder of four 40x40 PNGs of seeded random noise (``0.png`` ... ``3.png``): a tiny image set to scan."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{n}.png")
    return folder


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


_REAL: dict[str, object] = {}


def import_real(name: str):
    """The real library ``name`` (``torchvision``, ``timm`` or ``transformers``) for tests of its own models, or a
    clean skip where it is not installed.

    A test-environment step, never the package's: torchvision 0.28 (the release for torch 2.13) installed without
    its dependencies beside the CPU build of torch fails at import only because its compiled operators (nms,
    roi_align, ...) were built against CUDA libraries and ``torchvision/_meta_registrations.py`` registers fake
    kernels for them unconditionally. During ``import torchvision`` alone, ``torch.library.register_fake`` and
    ``register_autograd`` are no-ops (restored right after); its Python models then import and run, and so does
    timm. Users have a matching torchvision and need none of this."""
    if name in _REAL:
        if _REAL[name] is None:
            pytest.skip(f"{name} is not installed")
        return _REAL[name]
    import importlib

    if "torchvision" not in _REAL:  # timm and transformers import torchvision themselves: first, with the step
        try:
            _REAL["torchvision"] = _import_torchvision()
        except pytest.skip.Exception:
            if name == "torchvision":
                raise
            _REAL["torchvision"] = None
    if name != "torchvision":
        try:
            _REAL[name] = importlib.import_module(name)
        except ImportError as exc:
            pytest.skip(f"{name} is not installed ({exc})")
    return _REAL[name]


def _import_torchvision():
    import importlib.util

    import torch.library

    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    saved = torch.library.register_fake, torch.library.register_autograd

    def register_fake(op, fn=None, /, *args, **kwargs):  # as a decorator or a call: register nothing
        return (lambda f: f) if fn is None else fn

    def register_autograd(*args, **kwargs):
        return None

    torch.library.register_fake, torch.library.register_autograd = register_fake, register_autograd
    try:
        import torchvision
    finally:
        torch.library.register_fake, torch.library.register_autograd = saved
    return torchvision
