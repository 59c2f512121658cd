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
