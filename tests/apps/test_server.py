"""``deepvis serve``: the Toolbox behind the web app and its routes.

Covered: static and store files only from their own roots (``..``, encoded and double-encoded dots and slashes,
backslashes, absolute paths, NUL bytes, symlinks out of either root), both through Starlette's test client and
through a real uvicorn server on a loopback port with raw, unnormalized request lines; upload limits (413 with and
without Content-Length), decompression bombs and non-images (400), a good upload's predictions; view requests that
are malformed in every way answer 4xx with a JSON message, never 500; caches (the same view twice runs no forward
pass, no backward pass when nothing shows it, the fast backward path from a kept graph equals ``backprop``);
security headers; the default bind address; per-tab webcam frames.
"""

from __future__ import annotations

import ast
import base64
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deepvis
from deepvis.pixels import render
from deepvis.engine.backprop import backprop
from deepvis.apps.server import app as app_module
from deepvis.apps.server import passes as passes_module
from deepvis.apps.server import session as session_module
from deepvis.apps.server.app import create_app
from deepvis.apps.server.inputs import InputNotFound
from deepvis.core.errors import DeepvisError
from deepvis.models.efficientnet_lite import block_output_layers
from deepvis.apps.server.session import Toolbox, ViewRequest

with warnings.catch_warnings():  # starlette asks for httpx2 instead of httpx; both work
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.usefixtures("single_thread_torch")

#: The bundled model's linear block outputs (no longer its default layers): most tests here address blocks.N.
BLOCKS = block_output_layers()
SECRET = "TOP-SECRET-0c5f1e9a"  # the content of every file outside the roots: it must never be in a response
SAMPLES = Path(deepvis.__file__).parent / "pixels" / "samples"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """base/secret.txt, base/static (a copy of the package's static files, plus links out of it), base/store (one
    unit's images, plus links out of it), base/outside/secret.txt."""
    base = tmp_path_factory.mktemp("roots")
    (base / "secret.txt").write_text(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text(SECRET)
    (base / "outside" / "image.jpg").write_text(SECRET)
    static = base / "static"
    shutil.copytree(app_module.STATIC_ROOT, static)
    (static / "leak.txt").symlink_to(base / "secret.txt")
    (static / "leakdir").symlink_to(base / "outside", target_is_directory=True)
    store = base / "store"
    unit = store / "blocks.5" / "0003"
    unit.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(unit / "image.jpg")
    (unit / "deconv.jpg").write_bytes((unit / "image.jpg").read_bytes())
    (store / "blocks.5" / "0004").mkdir()
    (store / "blocks.5" / "0004" / "image.jpg").symlink_to(base / "outside" / "image.jpg")
    (store / "leak.txt").symlink_to(base / "secret.txt")
    (store / "leakdir").symlink_to(base / "outside", target_is_directory=True)
    return {"base": base, "static": static, "store": store}


@pytest.fixture(scope="module")
def toolbox(model, roots) -> Toolbox:
    return Toolbox(model, store=roots["store"], layers=BLOCKS)


@pytest.fixture(scope="module")
def app(toolbox, roots):
    """The app over the temporary static root (the package's own static folder is never touched)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app_module, "STATIC_ROOT", roots["static"])
        yield create_app(toolbox)


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(app, serving):
    """The same app behind a real uvicorn server on a free loopback port: (host, port)."""
    with serving(app) as address:
        yield address


def raw_request(address, request: bytes, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client normalizes the path) and parse the answer: (status, headers, body)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, headers, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def raw_get(address, path: str) -> tuple[int, dict[str, str], bytes]:
    return raw_request(address, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_array(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


@pytest.fixture(scope="module")
def cat_id(client, skimage_pngs) -> str:
    response = client.post("/api/inputs/upload?name=chelsea.png", content=skimage_pngs["chelsea"].read_bytes())
    assert response.status_code == 200, response.text
    return response.json()["input"]


def view(client, **fields):
    return client.post("/api/view", json=fields)


class ForwardCounter:
    """Counts forward passes of the network (a pre-hook on its top module)."""

    def __init__(self, model):
        self.count = 0
        self._handle = model.net.register_forward_pre_hook(self._hook)

    def _hook(self, _module, _inputs):
        self.count += 1

    def close(self):
        self._handle.remove()


@pytest.fixture
def forwards(model):
    counter = ForwardCounter(model)
    yield counter
    counter.close()


# ------------------------------------------------------------------------------------------------ files and paths
TRAVERSALS = [
    "../secret.txt", "%2e%2e/secret.txt", "%2E%2E/secret.txt", ".%2e/secret.txt", "..%2fsecret.txt",
    "..%2Fsecret.txt", "%2e%2e%2fsecret.txt", "%252e%252e/secret.txt", "%252e%252e%252fsecret.txt",
    "..%5csecret.txt", "..\\secret.txt", "%2e%2e%5csecret.txt", "./../secret.txt", "x/../../secret.txt",
    "..%2f..%2f..%2f..%2f..%2f..%2fetc/passwd", "/etc/passwd", "%2fetc/passwd", "%5cetc%5cpasswd",
    "//etc/passwd", "leak.txt", "leakdir/secret.txt", "leakdir/image.jpg", "leakdir/../secret.txt",
    "a%00b", "%00", "a" * 3000,
]


def _assert_refused(status: int, body: bytes, label: str) -> None:
    assert status in (403, 404), f"{label}: {status} {body[:200]!r}"
    assert SECRET.encode() not in body, label
    assert b"root:" not in body, label  # /etc/passwd


@pytest.mark.parametrize("prefix", ["/static/", "/store/"])
def test_traversal_refused_test_client(client, prefix):
    for path in TRAVERSALS:
        response = client.get(prefix + path)
        _assert_refused(response.status_code, response.content, prefix + path)
    assert client.get("/static/../secret.txt").status_code in (403, 404)


@pytest.mark.parametrize("prefix", ["/static/", "/store/"])
def test_traversal_refused_real_http(live_server, prefix):
    """Raw request lines, as a hostile client sends them: nothing between us and uvicorn normalizes the path."""
    for path in TRAVERSALS:
        status, headers, body = raw_get(live_server, prefix + path)
        _assert_refused(status, body, prefix + path)
        assert headers.get("x-content-type-options") == "nosniff", prefix + path
        assert "error" in json.loads(body), prefix + path  # the app's own JSON answer, not the file
    # http.client, told to leave the path alone
    connection = http.client.HTTPConnection(*live_server, timeout=20)
    try:
        for path in (prefix + "../secret.txt", prefix + "%2e%2e/secret.txt", prefix + "/etc/passwd"):
            connection.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
            connection.endheaders()
            response = connection.getresponse()
            _assert_refused(response.status, response.read(), path)
    finally:
        connection.close()


def test_legit_files_served(client, live_server, roots):
    response = client.get("/store/blocks.5/0003/image.jpg")
    assert response.status_code == 200
    assert response.content == (roots["store"] / "blocks.5" / "0003" / "image.jpg").read_bytes()
    assert response.headers["content-type"] == "image/jpeg"
    status, _, body = raw_get(live_server, "/store/blocks.5/0003/deconv.jpg")
    assert status == 200 and body == (roots["store"] / "blocks.5" / "0003" / "deconv.jpg").read_bytes()
    status, _, body = raw_get(live_server, "/static/index.html")
    assert status == 200 and body == (roots["static"] / "index.html").read_bytes()
    assert client.get("/").content == (roots["static"] / "index.html").read_bytes()
    # the unit's store images by URL; a unit whose image links out of the store is listed but never served
    listing = client.get("/api/unit?layer=blocks.5&channel=3").json()
    assert set(listing["images"]) == {"images", "deconv"} and listing["hint"] is None
    for url in listing["images"].values():
        assert client.get(url).status_code == 200
    assert client.get("/api/unit?layer=blocks.5&channel=5").json()["hint"]  # nothing there: how to compute it


def test_unit_listing_refuses_bad_layers(client):
    for layer in ("..", "../..", "no.such.layer", "/etc"):
        response = client.get("/api/unit", params={"layer": layer, "channel": "0"})
        assert response.status_code == 400 and "unknown layer" in response.json()["error"], layer
    for channel in ("-1", "x", "", "1.5"):
        response = client.get("/api/unit", params={"layer": "blocks.5", "channel": channel})
        assert response.status_code == 400 and "channel" in response.json()["error"], channel


def test_no_store(model):
    with TestClient(create_app(Toolbox(model)), raise_server_exceptions=False) as bare:
        response = bare.get("/store/anything.jpg")
        assert response.status_code == 404 and "--store" in response.json()["error"]


# ------------------------------------------------------------------------------------------------ uploads
def test_good_upload_predicts(client, skimage_pngs, cat_id):
    response = client.post("/api/inputs/upload?name=chelsea.png", content=skimage_pngs["chelsea"].read_bytes())
    assert response.status_code == 200
    data = response.json()
    assert data["input"] == cat_id  # the same picture is the same input
    assert data["name"] == "chelsea.png"
    top = data["predictions"][0]
    assert (top["index"], top["label"]) == (285, "Egyptian cat")
    image = client.get(f"/api/inputs/{cat_id}/image.png")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (224, 224)
    # the server's own image list
    listed = client.post("/api/inputs/file/0")
    assert listed.status_code == 200 and listed.json()["predictions"]


def test_oversized_upload_413(client, toolbox, live_server, monkeypatch):
    monkeypatch.setattr(toolbox, "max_upload_bytes", 1000)
    body = b"\xff" * 5000
    response = client.post("/api/inputs/upload", content=body)
    assert response.status_code == 413
    assert "1,000" in response.json()["error"]

    def chunks():  # no Content-Length: chunked transfer encoding
        for _ in range(5):
            yield b"\xff" * 1000

    response = client.post("/api/inputs/frame?tab=big", content=chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413 and "1,000" in response.json()["error"]
    # the same through uvicorn, both ways
    status, _, answer = raw_request(live_server, (
        "POST /api/inputs/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 5000\r\n\r\n").encode() + body)
    assert status == 413 and "1,000" in json.loads(answer)["error"]
    chunked = b"".join(b"%x\r\n%s\r\n" % (1000, b"\xff" * 1000) for _ in range(5)) + b"0\r\n\r\n"
    status, _, answer = raw_request(live_server, (
        "POST /api/inputs/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + chunked)
    assert status == 413 and "1,000" in json.loads(answer)["error"]
    # the view route has its own (small) limit
    response = client.post("/api/view", content=b"{" + b" " * (app_module.MAX_VIEW_BYTES + 10) + b"}")
    assert response.status_code == 413 and "error" in response.json()


def declared_size_png(width: int, height: int) -> bytes:
    """A tiny real PNG (a few dozen bytes) whose IHDR declares ``width`` x ``height``, CRC patched."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (10, 20, 30)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("side", [20000, 7000])  # over Pillow's own bomb limit; under it, over the server's
def test_decompression_bomb_400_fast(client, side):
    bomb = declared_size_png(side, side)
    assert len(bomb) < 100
    start = time.perf_counter()
    response = client.post("/api/inputs/upload?name=bomb.png", content=bomb)
    assert time.perf_counter() - start < 2
    assert response.status_code == 400
    message = response.json()["error"]
    assert f"{side * side:,}" in message and ("over the limit" in message or "too large" in message), message
    # a PNG cut after its IHDR is refused as well
    response = client.post("/api/inputs/upload?name=cut.png", content=bomb[:33] + b"\0" * 64)
    assert response.status_code == 400 and "cannot read image" in response.json()["error"]


@pytest.mark.parametrize("body, words", [
    (b"hello, I am not a picture\n" * 10, "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot read image"),
    (b"", "empty"),
])
def test_not_an_image_400(client, body, words):
    response = client.post("/api/inputs/upload?name=notes.txt", content=body)
    assert response.status_code == 400
    assert words in response.json()["error"]


def test_bad_resize_400(client, skimage_pngs):
    response = client.post("/api/inputs/upload?resize=squash", content=skimage_pngs["coffee"].read_bytes())
    assert response.status_code == 400 and "resize" in response.json()["error"]


# ------------------------------------------------------------------------------------------------ view requests
BAD_VIEWS = [
    ("not json", "JSON"),
    ("[1, 2]", "JSON object"),
    ("null", "JSON object"),
    ('"text"', "JSON object"),
    ("[" * 20000 + "]" * 20000, "JSON"),
    (b"\xff\xfe{}", "JSON"),
    ({"layer": "blocks.5"}, "input"),
    ({"input": "@ID"}, "layer"),
    ({"input": "@ID", "layer": "no.such.layer"}, "unknown layer"),
    ({"input": "@ID", "layer": ["blocks.5"]}, "layer"),
    ({"input": ["@ID"], "layer": "blocks.5"}, "input"),
    ({"input": {"a": 1}, "layer": "blocks.5"}, "input"),
    ({"input": "0123456789abcdef", "layer": "blocks.5"}, "unknown input"),
    ({"input": "@ID", "layer": "blocks.5", "back_mode": "magic"}, "backward mode"),
    ({"input": "@ID", "layer": "blocks.5", "back_mode": None}, "backward mode"),
    ({"input": "@ID", "layer": "blocks.5", "back_filter": "sepia"}, "filter"),
    ({"input": "@ID", "layer": "blocks.5", "back_filter": 3}, "back_filter"),
    ({"input": "@ID", "layer": "blocks.5", "channel": "seven"}, "channel"),
    ({"input": "@ID", "layer": "blocks.5", "channel": 1.5}, "channel"),
    ({"input": "@ID", "layer": "blocks.5", "channel": [1]}, "channel"),
    ({"input": "@ID", "layer": "blocks.5", "channel": None}, "channel"),
    ({"input": "@ID", "layer": "blocks.5", "boost_indiv": 7}, "boost"),
    ({"input": "@ID", "layer": "blocks.5", "boost_gamma": "NaN"}, "boost"),
    ({"input": "@ID", "layer": "blocks.5", "boost_gamma": "x"}, "bad view request"),
    ({"input": "@ID", "layer": "blocks.5", "cursor": "elsewhere"}, "cursor"),
    ({"input": "@ID", "layer": "blocks.5", "grid_key": 5}, "grid_key"),
    ({"input": "@ID", "layer": "blocks.5", "show_back": "false"}, "show_back"),
    ({"input": "@ID", "layer": "blocks.5", "back_enabled": 2}, "back_enabled"),
    ({"input": "@ID", "layer": "blocks.5", "cursor": "grid", "back_layer": "nope", "back_channel": 1}, "unknown layer"),
    ({"input": "@ID", "layer": "blocks.5", "cursor": "grid", "back_layer": "blocks.5", "back_channel": 80},
     "out of range"),
    ({"input": "@ID", "layer": "blocks.5", "cursor": "grid", "back_layer": "blocks.5", "back_channel": -1},
     "back_channel"),
    ({"input": "@ID", "layer": "blocks.5", "cursor": "grid", "back_layer": "blocks.5", "back_channel": 10 ** 40},
     "out of range"),
]


@pytest.mark.parametrize("payload, words", BAD_VIEWS, ids=[str(i) for i in range(len(BAD_VIEWS))])
def test_bad_view_requests_4xx_json(client, cat_id, payload, words):
    if isinstance(payload, dict):
        body = json.dumps({k: (cat_id if v == "@ID" else [cat_id] if v == ["@ID"] else v)
                           for k, v in payload.items()}).encode()
    else:
        body = payload if isinstance(payload, bytes) else payload.encode()
    response = client.post("/api/view", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    message = response.json()["error"]
    assert words.lower() in message.lower(), message
    assert "\n" not in message and "Traceback" not in message


def test_view_panes(client, cat_id):
    data = view(client, input=cat_id, layer="blocks.5", channel=3, cursor="grid").json()
    assert data["layer"] == "blocks.5" and data["channel"] == 3
    assert len(data["values"]) == 80
    grid = png_array(data["grid"]["png"])
    assert grid.shape[:2] == (data["grid"]["rows"] * (data["grid"]["tile_h"] + 2),
                              data["grid"]["cols"] * (data["grid"]["tile_w"] + 2))
    assert data["unit"]["unit"] == "blocks.5:3" and png_array(data["unit"]["png"]).shape == (14, 14, 3)
    assert data["back"]["origin"] == "blocks.5:3" and png_array(data["back"]["png"]).shape == (224, 224, 3)
    assert data["predictions"][0]["index"] == 285
    # out-of-range selections are clamped, not errors
    assert view(client, input=cat_id, layer="blocks.5", channel=10 ** 6).json()["channel"] == 79
    assert view(client, input=cat_id, layer="blocks.5", channel=-3).json()["channel"] == 0
    # the class layer names the unit's label
    label = view(client, input=cat_id, layer="prob", channel=285, cursor="grid").json()["unit"]
    assert label["label"] == "Egyptian cat" and png_array(label["png"]).shape == (1, 1, 3)


@pytest.mark.parametrize("layer, channel", [("stem.act", 7), ("blocks.10", 100), ("classifier", 285)])
def test_unit_pane_is_render_unit_image(toolbox, cat_id, layer, channel):
    request = ViewRequest(cat_id, layer, channel, cursor="grid", boost_indiv=0.3, boost_gamma=0.7, back_enabled=False)
    data = toolbox.view(request)
    acts = toolbox.get_input(cat_id).activations[layer]
    expected = render.to_uint8(render.unit_image(acts, channel, 0.3, 0.7))
    assert np.array_equal(png_array(data["unit"]["png"]), expected)
    tiles = render.tile_layer(acts, 0.3, 0.7)  # no ring: the page draws the selection over the grid
    assert np.array_equal(png_array(data["grid"]["png"]), render.to_uint8(tiles.image))


def test_cursor_moves_reuse_the_grid(toolbox, cat_id, monkeypatch):
    """The grid has no rings, so moving the cursor (or freezing a unit) on a layer shows the same picture, rendered
    once; a tab naming the grid it shows gets no picture back; boosts, 'a' and another layer give other grids."""
    renders = []
    tile_layer = render.tile_layer
    monkeypatch.setattr(render, "tile_layer", lambda *a, **k: renders.append(a) or tile_layer(*a, **k))
    request = ViewRequest(cat_id, "blocks.6", 1, cursor="grid", boost_gamma=0.55)  # a grid no other test renders
    first = toolbox.view(request)
    assert len(renders) == 1
    acts = toolbox.get_input(cat_id).activations["blocks.6"]
    assert np.array_equal(png_array(first["grid"]["png"]), render.to_uint8(tile_layer(acts, 0, 0.55).image))
    moves = [toolbox.view(replace(request, channel=c)) for c in (2, 3, 12)]
    frozen = toolbox.view(replace(request, channel=4, back_layer="blocks.6", back_channel=2, back_frozen=True))
    assert len(renders) == 1, "a cursor move rendered the grid again"
    for answer in moves + [frozen]:
        assert answer["grid"] == first["grid"]
        assert answer["back"]["origin"] != first["back"]["origin"] and answer["unit"] != first["unit"]
    assert [m["unit"]["unit"] for m in moves] == ["blocks.6:2", "blocks.6:3", "blocks.6:12"]
    named = toolbox.view(replace(request, channel=5, grid_key=first["grid"]["key"]))
    assert named["grid"]["png"] is None and {**named["grid"], "png": first["grid"]["png"]} == first["grid"]
    assert named["unit"]["unit"] == "blocks.6:5" and named["back"]["origin"] == "blocks.6:5"
    stale = toolbox.view(replace(request, channel=5, grid_key="0123456789abcdef"))
    assert stale["grid"] == first["grid"]
    others = [replace(request, boost_gamma=0.7), replace(request, layer="blocks.7"),
              replace(request, show_back=True, grid_key=first["grid"]["key"])]
    keys = {first["grid"]["key"]}
    for other in others:
        answer = toolbox.view(other)
        assert answer["grid"]["png"] is not None and answer["grid"]["key"] not in keys
        keys.add(answer["grid"]["key"])
    assert len(renders) == 4
    diffs = toolbox.view(replace(request, channel=6, show_back=True))  # 'a': the grid shows the new origin's diffs
    assert diffs["grid"]["key"] not in keys and len(renders) == 5


def test_png_encoder_round_trip():
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.random((7, 5, 1)), 3, axis=2)
    for image, mode in ((rng.random((17, 31, 3)), "RGB"), (rng.random((5, 9, 1)), "L"), (rng.random((6, 4)), "L"),
                        (np.zeros((1, 1, 3)), "L"), (gray, "L")):  # equal channels: written as grayscale
        for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_RLE):
            decoded = Image.open(io.BytesIO(render.png_bytes(image, strategy)))
            assert decoded.mode == mode
            expected = render.to_uint8(image)
            assert np.array_equal(np.asarray(decoded), expected.reshape(np.asarray(decoded).shape)
                                  if mode == "RGB" or expected.ndim == 2 else expected[:, :, 0])


def test_same_view_twice_no_forward(client, cat_id, forwards, toolbox, monkeypatch):
    calls = []
    original = toolbox.backward
    monkeypatch.setattr(toolbox, "backward", lambda *a, **k: calls.append(a) or original(*a, **k))
    request = {"input": cat_id, "layer": "blocks.7", "channel": 11, "cursor": "grid", "back_mode": "deconv",
               "back_filter": "norm"}
    first = view(client, **request).json()
    after_first = forwards.count
    second = view(client, **request).json()
    assert forwards.count == after_first, "the same view again ran a forward pass"
    assert second["timing"]["backward_ms"] == 0.0  # from the cache
    assert second["back"] == first["back"] and second["grid"] == first["grid"]
    # a new unit on the same still image: a backward pass, but no forward pass (the graph is kept)
    view(client, **{**request, "channel": 12})
    assert forwards.count == after_first
    assert len(calls) == 3


def test_no_backward_when_nothing_shows_it(client, cat_id, forwards, toolbox, monkeypatch):
    calls = []
    monkeypatch.setattr(toolbox, "backward", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(passes_module, "trace", lambda *a, **k: calls.append(a))
    for layer, channel in (("blocks.3", 1), ("blocks.12", 190), ("prob", 285)):
        data = view(client, input=cat_id, layer=layer, channel=channel, cursor="layers", back_frozen=False,
                    show_back=False, back_enabled=True).json()
        assert data["back"] is None and data["unit"] is None
        assert data["timing"]["backward_ms"] == 0.0
    data = view(client, input=cat_id, layer="blocks.3", channel=1, cursor="grid", back_enabled=False).json()
    assert data["back"] is None and data["unit"] is not None
    assert calls == [] and forwards.count == 0


@pytest.mark.parametrize("mode", ["gradient", "deconv", "guided"])
def test_back_pane_equals_backprop(model, skimage_pngs, mode):
    """The fast path (backward from a kept forward graph) shows what ``deepvis.backprop`` computes."""
    toolbox = Toolbox(model, layers=BLOCKS)
    image = Image.open(skimage_pngs["coffee"]).convert("RGB")
    frame = jpeg_bytes(image)
    first = toolbox.input_from_bytes(frame, "coffee.jpg")
    unit = "blocks.9:17"
    # two views: the first makes the graph (or a new input gets one); the second uses it for another unit
    for origin, channel in (("blocks.9", 17), ("blocks.9", 40)):
        request = ViewRequest(first.id, "blocks.9", channel, cursor="grid", show_back=True, back_mode=mode,
                              back_filter="raw")
        data = toolbox.view(request)
        unit = f"{origin}:{channel}"
        expected = backprop(model, first.image, unit, mode, layers=["blocks.9"])
        assert data["back"]["origin"] == unit
        assert data["back"]["rectifiers_modified"] == expected.rectifiers_modified
        back = png_array(data["back"]["png"]).astype(int)
        want = render.to_uint8(expected.image("raw")).astype(int)
        assert np.abs(back - want).max() <= 1
    # a frame arriving after a view with a backward pane is forwarded with the graph: no second forward pass
    counter = ForwardCounter(model)
    try:
        second = toolbox.input_from_bytes(jpeg_bytes(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), "flip")
        data = toolbox.view(ViewRequest(second.id, "blocks.12", 5, cursor="grid", back_mode=mode))
        assert counter.count == 1
    finally:
        counter.close()
    expected = backprop(model, second.image, "blocks.12:5", mode)
    assert np.abs(png_array(data["back"]["png"]).astype(int)
                  - render.to_uint8(expected.image("raw")).astype(int)).max() <= 1
    assert data["back"]["rectifiers_modified"] == expected.rectifiers_modified


def test_two_webcam_tabs_in_different_modes_each_get_one_forward_pass_per_frame(model, skimage_pngs):
    """Each tab's new frame is traced as that tab's last view needs (gradient in one tab, guided in the other): one
    forward pass per frame, not a second one because the other tab last asked for another mode."""
    toolbox = Toolbox(model, layers=BLOCKS)
    photos = [Image.open(skimage_pngs[name]).convert("RGB") for name in ("coffee", "chelsea", "coffee")]
    modes = {"tab-a": "gradient", "tab-b": "guided"}
    counter = ForwardCounter(model)
    try:
        for round_, photo in enumerate(photos):
            for shift, (tab, mode) in enumerate(modes.items()):
                frame = jpeg_bytes(photo.rotate(3 * shift + round_))  # every frame a new picture
                before = counter.count
                item = toolbox.input_from_bytes(frame, "frame", tab=tab)
                data = toolbox.view(ViewRequest(item.id, "blocks.9", 7, cursor="grid", back_mode=mode))
                assert data["back"]["mode"] == mode
                if round_ > 0:  # from each tab's second frame on, its own last view planned the pass
                    assert counter.count - before == 1, (tab, mode, round_)
    finally:
        counter.close()


def test_show_back_layer_diffs(toolbox, cat_id, model):
    """'a': the grid shows the backward signal at the shown layer (zeros above the origin)."""
    cat = toolbox.get_input(cat_id)
    below = toolbox.view(ViewRequest(cat_id, "blocks.4", 2, cursor="layers", show_back=True,
                                     back_layer="blocks.11", back_channel=9, back_frozen=True))
    assert below["grid"]["diffs"] and below["back"]["origin"] == "blocks.11:9"
    expected = backprop(model, cat.image, "blocks.11:9", "gradient", layers=["blocks.4"])
    tiles = render.tile_layer(expected.layer_grads["blocks.4"], diffs=True)
    assert np.abs(png_array(below["grid"]["png"]).astype(int) - render.to_uint8(tiles.image).astype(int)).max() <= 1
    above = toolbox.view(ViewRequest(cat_id, "blocks.14", 2, cursor="layers", show_back=True,
                                     back_layer="blocks.11", back_channel=9))
    assert above["back"] is None  # not frozen, cursor in the layer list: the back pane is hidden
    assert above["grid"]["diffs"]


# ------------------------------------------------------------------------------------------------ headers
def test_security_headers(client, live_server):
    for path in ("/", "/api/info", "/static/index.html", "/static/missing.js", "/store/blocks.5/0003/image.jpg"):
        response = client.get(path)
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "object-src 'none'" in csp, path
        assert response.headers.get("x-content-type-options") == "nosniff", path
    for path in ("/", "/api/info", "/static/index.html"):
        status, headers, _ = raw_get(live_server, path)
        assert status == 200
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    info = client.get("/api/info").json()
    assert info["limits"]["max_upload_bytes"] > 0 and info["layers"][0]["name"] == "stem.act"


# ------------------------------------------------------------------------------------------------ webcam frames
def test_frames_per_tab(client, toolbox):
    pictures = [Image.open(SAMPLES / name).convert("RGB").resize((224, 224)) for name in
                ("astronaut.jpg", "rocket.jpg", "coffee.jpg")]
    frames = [jpeg_bytes(p) for p in pictures]

    def post(tab, frame):
        response = client.post(f"/api/inputs/frame?tab={tab}", content=frame)
        assert response.status_code == 200, response.text
        return response.json()["input"]

    def alive(input_id):
        response = view(client, input=input_id, layer="blocks.0")
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200

    a1 = post("A", frames[0])
    b1 = post("B", frames[1])
    assert alive(a1) and alive(b1)
    a2 = post("A", frames[2])
    assert alive(a2) and alive(b1)
    assert not alive(a1), "tab A's first frame should be dropped by its second"
    error = view(client, input=a1, layer="blocks.0").json()["error"]
    assert "unknown input" in error and "send the image again" in error
    # two tabs on the same picture: it stays while either still shows it
    c1 = post("C", frames[1])
    assert c1 == b1
    post("B", frames[0])
    assert alive(c1)


def test_frames_keep_still_images_in_a_small_cache(model, skimage_pngs):
    """Frames that replace each other free their share of the cache: a still image is not pushed out."""
    probe = Toolbox(model, layers=BLOCKS)
    size = probe.input_from_bytes(skimage_pngs["camera"].read_bytes()).nbytes
    toolbox = Toolbox(model, layers=BLOCKS, cache_bytes=3 * size + size // 2)
    still = toolbox.input_from_bytes(skimage_pngs["chelsea"].read_bytes(), "still")
    toolbox.view(ViewRequest(still.id, "blocks.5", 1, cursor="grid"))  # a backward pass: the still keeps a graph
    base = Image.open(SAMPLES / "rocket.jpg").convert("RGB").resize((224, 224))
    for shift in range(8):
        frame = toolbox.input_from_bytes(jpeg_bytes(base.rotate(shift * 5)), "frame", tab="cam")
        toolbox.view(ViewRequest(frame.id, "blocks.5", shift, cursor="grid"))
    assert toolbox.get_input(still.id) is still
    assert len(toolbox._inputs) == 2
    assert toolbox._inputs.bytes == sum(size for _, size in toolbox._inputs.values())
    # kept graphs: the still's and the latest frame's (a frame's graph goes when the next frame comes)
    assert set(toolbox._traces) == {still.id, frame.id} and len(toolbox._traces) <= session_module.TRACES


# ------------------------------------------------------------------------------------------------ bind address
def test_host_default_is_loopback():
    from deepvis.apps import cli

    args = cli.build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
    help_text = subprocess.run([sys.executable, "-m", "deepvis", "serve", "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    assert "127.0.0.1" in help_text


def _listeners(port: int) -> list[tuple[str, str]]:
    """(table, local address hex) of the sockets listening on ``port``, from /proc/net/tcp{,6}."""
    found = []
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append((table, address))
    return found


def test_serve_binds_loopback_only(tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "deepvis", "serve", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(180, process.kill)  # never hang the test run, whatever the server does
    watchdog.start()
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + (process.stderr.read() if process.poll() else "")
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "the server did not start listening"
                time.sleep(0.1)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request("GET", "/api/info")
        assert connection.getresponse().status == 200
        connection.close()
        if Path("/proc/net/tcp").exists():
            assert _listeners(port) == [("tcp", "0100007F")]  # 127.0.0.1 only; not 0.0.0.0, not ::
    finally:
        watchdog.cancel()
        process.kill()
        process.communicate(timeout=30)


def test_serve_warns_when_not_loopback(monkeypatch, capsys):
    """--host 0.0.0.0 warns on stderr (uvicorn.run is stubbed: nothing listens on every interface)."""
    import uvicorn

    from deepvis.apps import cli

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append(kwargs))
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "8123"]) == 0
    captured = capsys.readouterr()
    assert "http://127.0.0.1:8123/" in captured.out
    assert "warning" in captured.err and "0.0.0.0" in captured.err
    assert len(started) == 1 and (started[0]["host"], started[0]["port"]) == ("0.0.0.0", 8123)
    assert cli.main(["serve", "--port", "8124"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and started[-1]["host"] == "127.0.0.1"


class _InPlaceAfterReLU(torch.nn.Module):
    """A model that changes a rectifier's output in place after it: the tensor kept for the backward pass
    (and the recorded activation) changes, so a kept trace cannot be used as it is; the trace traces again,
    stopped at the unit's layer, as ``backprop_batch`` does."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=4, padding=1)
        self.act = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.act2 = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.act(self.conv(x))
        y.mul_(2.0)
        return self.pool(self.act2(self.conv2(y))).flatten(1)


@pytest.mark.parametrize("mode", ["deconv", "guided"])
def test_in_place_model_falls_back(mode):
    model = deepvis.load_model(_InPlaceAfterReLU())
    toolbox = Toolbox(model)
    assert {"act", "act2"} <= {layer.name for layer in toolbox.layers}
    picture = Image.open(SAMPLES / "rocket.jpg").convert("RGB")
    item = toolbox.input_from_file(0)
    for layer, channel in (("act2", 1), ("act", 2), ("act2", 3)):
        data = toolbox.view(ViewRequest(item.id, layer, channel, cursor="grid", back_mode=mode))
        expected = backprop(model, item.image, f"{layer}:{channel}", mode)
        back = png_array(data["back"]["png"]).astype(int)
        assert np.abs(back - render.to_uint8(expected.image("raw")).astype(int)).max() <= 1, (layer, channel)
        assert data["back"]["rectifiers_modified"] == expected.rectifiers_modified
    # frames keep working after the fallback
    frame = toolbox.input_from_bytes(jpeg_bytes(picture.resize((224, 224))), "frame", tab="t")
    data = toolbox.view(ViewRequest(frame.id, "act2", 0, cursor="grid", back_mode=mode))
    expected = backprop(model, frame.image, "act2:0", mode)
    assert np.abs(png_array(data["back"]["png"]).astype(int)
                  - render.to_uint8(expected.image("raw")).astype(int)).max() <= 1


def test_all_model_work_runs_on_one_thread(model, skimage_pngs):
    """Torch runs twice as slowly in a process once a second thread has used it: every forward and backward pass
    of the server, whatever the request, runs on the compute thread (also where the CLI loads the model)."""
    import threading

    from deepvis.apps.server.compute import Compute

    compute = Compute()
    toolbox = compute.run(lambda: Toolbox(model, layers=BLOCKS))
    threads = set()
    handle = model.net.register_forward_pre_hook(lambda *_: threads.add(threading.get_ident()))
    try:
        with TestClient(create_app(toolbox, compute)) as client:
            for name in ("chelsea", "coffee", "camera"):
                item = client.post(f"/api/inputs/frame?tab=t&name={name}",
                                   content=skimage_pngs[name].read_bytes()).json()
                for channel, mode in ((3, "gradient"), (4, "guided")):
                    response = view(client, input=item["input"], layer="blocks.5", channel=channel, cursor="grid",
                                    back_mode=mode)
                    assert response.status_code == 200 and response.json()["back"] is not None
    finally:
        handle.remove()
        compute.close()
    assert threads == {compute.thread_id}


def test_each_new_frame_costs_exactly_one_forward_pass(client, forwards, skimage_pngs):
    """A webcam frame and the view that shows its panes (backward pane on) share one forward pass: the frame is
    traced in the backward mode the tab showed last, and the view's backward pass starts from that trace."""
    base = Image.open(SAMPLES / "rocket.jpg").convert("RGB").resize((224, 224))
    for mode in ("gradient", "guided", "guided", "deconv"):
        for shift in range(3):
            before = forwards.count
            frame = client.post(f"/api/inputs/frame?tab=one-forward-{mode}",
                                content=jpeg_bytes(base.rotate(shift * 7 + len(mode)))).json()
            data = view(client, input=frame["input"], layer="blocks.7", channel=shift, cursor="grid",
                        back_mode=mode).json()
            assert data["back"]["mode"] == mode
            if shift:  # the first frame after a mode change is traced in the old mode: its view needs a new trace
                assert forwards.count - before == 1, (mode, shift)


# ------------------------------------------------------------------------------------------------ module structure
def test_server_modules_import_in_one_direction():
    """The server's modules import each other without a cycle (session, panes and overlays once imported each
    other), and the overlays and panes read no private of the toolbox."""
    root = Path(app_module.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deepvis.apps.server"):
                sub = node.module[len("deepvis.apps.server"):].lstrip(".")
                names |= {sub.split(".")[0]} if sub else {a.name for a in node.names}
        graph[path.stem] = names
        if path.stem in ("panes", "overlays"):
            assert not any(isinstance(node, ast.Attribute) and node.attr.startswith("_") and
                           isinstance(node.value, ast.Attribute) and node.value.attr == "toolbox"
                           for node in ast.walk(tree)), path.stem
            assert not any(isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and
                           node.value.id == "toolbox" and node.attr.startswith("_") for node in ast.walk(tree))
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        if name not in done:
            for dep in graph.get(name, ()):
                visit(dep, path + (name,))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_unknown_input_is_the_servers_not_found(toolbox):
    with pytest.raises(InputNotFound, match="unknown input") as raised:
        toolbox.get_input("0123456789abcdef")
    assert isinstance(raised.value, DeepvisError) and isinstance(raised.value, LookupError)
