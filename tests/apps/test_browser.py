"""The live toolbox in a real browser: headless Chromium (Playwright) against a real ``deepvis serve`` app.

Each test opens a fresh page on one server and drives it with the keyboard and the mouse like a user, then
checks what the page shows: the status line, the panes' classes and pictures, downloads, uploads and the
fake webcam. Screenshots go to ``test-output/browser/``; one of them is also kept as ``docs/images/toolbox.png``.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

import os  # noqa: E402

CHROMIUM = Path(os.environ.get("DEEPVIS_CHROMIUM", "/usr/bin/chromium"))
if os.environ.get("CI") and not CHROMIUM.exists():  # CI installs it: a missing browser must not pass silently
    raise RuntimeError(f"no Chromium at {CHROMIUM}: .ci/run should have installed Debian's chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)", allow_module_level=True)

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from PIL import Image, ImageChops, ImageStat  # noqa: E402

import deepvis  # noqa: E402
from deepvis.models.efficientnet_lite import block_output_layers  # noqa: E402
from deepvis.apps.server.app import STATIC_ROOT, create_app  # noqa: E402
from deepvis.apps.server.session import Toolbox  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread_torch")]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "browser"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMEOUT = 30_000  # ms, for one request on a busy 2-core machine


# ---------------------------------------------------------------------------------------------- fixtures
def serve(toolbox: Toolbox):
    """Run an app for ``toolbox`` on a free port in a background thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(create_app(toolbox), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def model(single_thread_torch):
    return deepvis.load_model()


@pytest.fixture(scope="module")
def server(model):
    """The app as ``deepvis serve --layers <the block outputs>`` runs it: the bundled model and sample images, no
    store, the layer list these tests navigate (blocks.0 ... blocks.15)."""
    yield from serve(Toolbox(model, layers=block_output_layers()))


@pytest.fixture(scope="module")
def default_server(model):
    """The app exactly as ``deepvis serve`` runs it: the bundled model's default layers."""
    yield from serve(Toolbox(model))


@pytest.fixture(scope="module")
def store_server(model, tmp_path_factory):
    """The same model with a small hand-made store: a pattern sprite of blocks.5 and images of unit blocks.5:3."""
    store = tmp_path_factory.mktemp("store")
    sprite = Image.new("RGB", (9 * 20, 9 * 20))  # 80 channels: 9 x 9 tiles of 20 pixels, one colour each
    for channel in range(80):
        row, col = divmod(channel, 9)
        sprite.paste((channel * 3, 255 - channel * 3, 128), (col * 20, row * 20, col * 20 + 20, row * 20 + 20))
    (store / "blocks.5").mkdir()
    sprite.save(store / "blocks.5" / "sprite_optimized.jpg")
    unit = store / "blocks.5" / "0003"
    unit.mkdir()
    for name, colour in (("optimized.png", "orange"), ("image.jpg", "teal"), ("deconv.jpg", "purple")):
        Image.new("RGB", (64, 64), colour).save(unit / name)
    yield from serve(Toolbox(model, store=store, layers=block_output_layers()))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str, name: str):
    """A fresh tab on the toolbox, loaded and idle; fails the test on any script error or CSP violation."""
    context = browser.new_context(viewport={"width": 1400, "height": 860}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    errors = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.goto(url)
    settle(page)
    page.errors, page.expected_errors = errors, []  # a test that asks for a 4xx adds e.g. "status of 400"
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    context.close()
    assert not [e for e in errors if not any(x in e for x in page.expected_errors)], errors


@pytest.fixture()
def page(browser, server, request):
    yield from open_page(browser, server, request.node.name)


@pytest.fixture()
def default_page(browser, default_server, request):
    yield from open_page(browser, default_server, request.node.name)


@pytest.fixture()
def store_page(browser, store_server, request):
    yield from open_page(browser, store_server, request.node.name)


# ---------------------------------------------------------------------------------------------- helpers
def settle(page) -> None:
    """Wait until no request of the page is in flight (the page sets body[data-busy] on every change)."""
    page.wait_for_selector("body[data-busy='0']", state="attached")


def press(page, *keys: str) -> None:
    for key in keys:
        page.keyboard.press(key)
        settle(page)


def status(page) -> str:
    return page.inner_text("#status-text")


def src(page, selector: str) -> str | None:
    return page.get_attribute(selector, "src")


def input_id(page) -> str:
    return re.search(r"/api/inputs/([0-9a-f]+)/", src(page, "#input-img")).group(1)


def predictions(page) -> list[str]:
    return page.locator("#predictions .label").all_inner_texts()


def layer_class(page, pretty: str) -> str:
    return page.locator("#layers .layer", has_text=re.compile(f"^{re.escape(pretty)}$")).get_attribute("class")


def tile_center(page, channel: int) -> dict:
    """Where tile ``channel`` of the grid is on the page, from the grid geometry the server sent."""
    box = page.locator("#grid-img").bounding_box()
    natural = page.eval_on_selector("#grid-img", "img => [img.naturalWidth, img.naturalHeight]")
    view = page.request.post(f"{page.url}api/view", data={"input": input_id(page), "layer": layer_of(page)}).json()
    grid = view["grid"]
    cell_w, cell_h = grid["tile_w"] + 2 * grid["pad"], grid["tile_h"] + 2 * grid["pad"]
    row, col = divmod(channel, grid["cols"])
    scale = box["width"] / natural[0]
    return {"x": box["x"] + (col + 0.5) * cell_w * scale, "y": box["y"] + (row + 0.5) * cell_h * scale,
            "values": view["values"]}


def layer_of(page) -> str:
    return re.match(r"\w+ (\S+):\d+", status(page)).group(1)


def colour_counts(page, selector: str) -> dict:
    """Pixels of an image that are clearly red, clearly green, or grey (r ~ g ~ b)."""
    return page.eval_on_selector(selector, """img => {
        const c = document.createElement('canvas');
        [c.width, c.height] = [img.naturalWidth, img.naturalHeight];
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        let red = 0, green = 0, grey = 0;
        for (let i = 0; i < d.length; i += 4) {
            const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
            if (r > g + 15 && r > b + 15) red++;
            else if (g > r + 15 && g > b + 15) green++;
            else if (Math.abs(r - g) < 8 && Math.abs(g - b) < 8) grey++;
        }
        return {red, green, grey, total: d.length / 4};
    }""")


def keymap_keys() -> list[str]:
    """Every key named in keymap.js, read from the file itself."""
    text = (STATIC_ROOT / "keymap.js").read_text(encoding="utf-8")
    keys = [k for group in re.findall(r"keys: \[([^\]]*)\]", text) for k in re.findall(r"'([^']*)'", group)]
    assert len(keys) > 40
    return keys


def enter_grid(page, pretty: str) -> None:
    page.locator("#layers .layer", has_text=re.compile(f"^{re.escape(pretty)}$")).click()
    settle(page)
    press(page, "ArrowDown")


# ---------------------------------------------------------------------------------------------- tests
def test_page_loads_under_the_csp_with_layers_and_predictions(page, server):
    info = httpx.get(f"{server}/api/info").json()
    assert page.locator("#layers .layer").all_inner_texts() == [layer["pretty"] for layer in info["layers"]]
    assert status(page) == "fwd stem.act:0 | Back: off | Boost: 0/1 | h for help"
    assert "cursor" in layer_class(page, "stem")
    assert len(predictions(page)) == 5 and predictions(page)[0]
    assert page.eval_on_selector("#input-img", "img => img.naturalWidth") == info["input_size"][1]
    assert page.eval_on_selector("#grid-img", "img => img.naturalWidth") > 0
    assert page.locator("#back-pane").get_attribute("class").split() == ["pane", "off"]
    assert page.inner_text("#back-off") == "off"
    assert "not computed yet" in page.inner_text("#units-body")  # no store
    assert not page.errors


def test_keys_and_clicks_walk_layers_and_units(page):
    press(page, "ArrowRight", "ArrowRight")
    assert status(page).startswith("fwd blocks.1:0 |") and "cursor" in layer_class(page, "block 1")
    press(page, "j")
    assert status(page).startswith("fwd blocks.0:0 |")
    page.locator("#layers .layer", has_text="block 5").click()  # 80 channels: 9 columns
    settle(page)
    assert status(page).startswith("fwd blocks.5:0 |") and "cursor" in layer_class(page, "block 5")
    assert page.locator("#predictions li").count() == 5 and page.locator("#aux-unit").is_hidden()

    press(page, "ArrowDown")  # into the grid: the aux pane shows the selected unit instead of predictions
    assert "selected" in layer_class(page, "block 5") and "cursor" not in layer_class(page, "block 5")
    assert page.locator("#aux-unit-img").is_visible() and page.locator("#predictions").is_hidden()
    assert page.inner_text("#aux-caption").startswith("blocks.5:0 · max ")
    moves = [("ArrowRight", 1), ("l", 2), ("L", 5), ("j", 4), ("ArrowDown", 13), ("k", 22), ("K", 49), ("I", 22),
             ("i", 13), ("ArrowLeft", 12), ("J", 9), ("Shift+ArrowRight", 12), ("Shift+ArrowLeft", 9)]
    for key, channel in moves:
        press(page, key)
        assert status(page).startswith(f"fwd blocks.5:{channel} |"), (key, status(page))
        assert page.inner_text("#aux-caption").startswith(f"blocks.5:{channel} · max ")
    press(page, "K", "K", "K")  # clamped to the last channel
    assert status(page).startswith("fwd blocks.5:79 |")
    press(page, "o")  # next layer, cursor stays in the grid, unit clamped
    assert status(page).startswith("fwd blocks.6:79 |") and "selected" in layer_class(page, "block 6")
    press(page, "u", "U")
    assert status(page).startswith("fwd blocks.4:39 |")  # 40 channels
    press(page, "i", "i", "i", "i", "i", "i", "i")  # 7 columns: up six rows, then out to the layer list
    assert status(page).startswith("fwd blocks.4:4 |") and "cursor" in layer_class(page, "block 4")
    assert page.locator("#predictions li").count() == 5

    page.locator("#layers .layer", has_text="block 5").click()
    settle(page)
    target = tile_center(page, 30)
    page.mouse.click(target["x"], target["y"])
    settle(page)
    assert status(page).startswith("fwd blocks.5:30 |") and page.locator("#aux-unit-img").is_visible()
    for channel in (12, 47):  # hovering shows the value the server computed for that tile
        target = tile_center(page, channel)
        page.mouse.move(target["x"], target["y"])
        value = f"{target['values'][channel]:.3f}".rstrip("0").rstrip(".")
        sync_api.expect(page.locator("#hover")).to_have_text(f"blocks.5:{channel} = {value}")
    page.mouse.move(2, 400)
    sync_api.expect(page.locator("#hover")).to_be_hidden()


def test_backward_modes_and_filters_change_the_back_pane(page):
    enter_grid(page, "block 5")
    press(page, "l", "l", "l")
    assert "Back: off" in status(page) and "off" in page.get_attribute("#back-pane", "class")
    seen = {}
    for expected in ["gradient (from blocks.5:3, raw)", "gradient (from blocks.5:3, norm)",
                     "deconv (from blocks.5:3, raw)", "guided (from blocks.5:3, raw)"]:
        press(page, "b")
        assert f"Back: {expected}" in status(page)
        assert "off" not in page.get_attribute("#back-pane", "class").split()
        assert page.eval_on_selector("#back-img", "img => img.naturalWidth") == 224
        seen[expected] = src(page, "#back-img")
    assert len(set(seen.values())) == 4, "every easy-loop step shows a different backward image"
    press(page, "b")
    assert "Back: off" in status(page) and "off" in page.get_attribute("#back-pane", "class")
    assert page.locator("#back-img").is_hidden()

    modes = {}
    for mode in ("gradient", "deconv", "guided"):
        press(page, "n")
        assert f"Back: {mode} (from blocks.5:3, raw)" in status(page)
        modes[mode] = src(page, "#back-img")
    assert modes["gradient"] == seen["gradient (from blocks.5:3, raw)"]
    assert len(set(modes.values())) == 3
    press(page, "n")
    assert "Back: off" in status(page)

    press(page, "n")
    filters = {}
    for name in ("gray", "norm", "normblur", "raw"):
        press(page, "m")
        assert f"Back: gradient (from blocks.5:3, {name})" in status(page)
        assert page.inner_text("#back-caption").startswith(f"gradient · {name} · from blocks.5:3")
        filters[name] = src(page, "#back-img")
    assert len(set(filters.values())) == 4
    press(page, "m")  # gray really is grey
    counts = colour_counts(page, "#back-img")
    assert counts["grey"] == counts["total"]


def test_show_back_colours_the_grid_red_and_green(page):
    enter_grid(page, "block 12")
    press(page, "d", "u", "u", "u")  # the origin stays at blocks.12:0; the grid shows blocks.9
    forward = src(page, "#grid-img")
    before = colour_counts(page, "#grid-img")
    assert before["red"] == 0
    press(page, "a")  # also turns the backward pass on
    assert status(page).startswith("back blocks.9:0 | Back: gradient (from blocks.12:0, raw, frozen)")
    assert src(page, "#grid-img") != forward
    after = colour_counts(page, "#grid-img")
    assert after["red"] > 0.05 * after["total"] and after["green"] > 0.05 * after["total"], after
    press(page, "a")
    assert status(page).startswith("fwd blocks.9:0 |") and src(page, "#grid-img") == forward


def test_freeze_keeps_the_backward_origin(page):
    enter_grid(page, "block 5")
    press(page, "l", "l", "b")
    origin_image = src(page, "#back-img")
    press(page, "d")
    assert "Back: gradient (from blocks.5:2, raw, frozen)" in status(page)
    assert "frozen" in layer_class(page, "block 5")
    press(page, "l", "l")
    assert status(page).startswith("fwd blocks.5:4 | Back: gradient (from blocks.5:2, raw, frozen)")
    assert src(page, "#back-img") == origin_image
    press(page, "ArrowUp", "ArrowRight", "ArrowRight")  # to another layer in the list: back stays visible
    assert status(page).startswith("fwd blocks.7:4 |") and "from blocks.5:2" in status(page)
    assert "frozen" in layer_class(page, "block 5") and "cursor" in layer_class(page, "block 7")
    assert page.locator("#back-img").is_visible() and src(page, "#back-img") == origin_image
    press(page, "ArrowDown", "d")
    assert "Back: gradient (from blocks.7:4, raw) |" in status(page)
    assert src(page, "#back-img") != origin_image
    assert "frozen" not in layer_class(page, "block 5")


def cell_ring_and_inside(shot: Image.Image, page, channel: int) -> tuple[tuple, tuple]:
    """The screen colours (in ``shot``, a screenshot of the page) of tile ``channel``'s ring, halfway along its top
    edge, and of its inside next to the ring, from the grid geometry the server sent."""
    box = page.locator("#grid-img").bounding_box()
    natural = page.eval_on_selector("#grid-img", "img => img.naturalWidth")
    grid = page.request.post(f"{page.url}api/view", data={"input": input_id(page), "layer": layer_of(page)}).json()
    cell_w, cell_h = grid["grid"]["tile_w"] + 2 * grid["grid"]["pad"], grid["grid"]["tile_h"] + 2 * grid["grid"]["pad"]
    scale = box["width"] / natural
    assert scale >= 3, "the test reads one-pixel rings: the grid must be enlarged"
    row, col = divmod(channel, grid["grid"]["cols"])
    x = box["x"] + (col + 0.5) * cell_w * scale
    top = box["y"] + row * cell_h * scale
    return shot.getpixel((round(x), round(top + 0.5 * scale))), shot.getpixel((round(x), round(top + 1.5 * scale)))


def test_rings_of_the_selected_tile_and_the_frozen_origin_follow_the_keys(page):
    """The server sends the grid without rings; the page rings the selected tile (green) and the frozen backward
    origin (blue) over it, exactly where the tiles are, on the forward and the diff grid and in the saved view."""
    info = httpx.get(f"{page.url}api/info").json()
    green, blue = [tuple(map(int, re.findall(r"\d+", info["rings"][k]))) for k in ("selected", "frozen")]
    assert green == (128, 255, 128) and blue == (51, 51, 255)  # the original's (.5, 1, .5) and (.2, .2, 1)

    def rings(pad=(0, 0, 0)) -> dict:
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        found = {}
        for channel in range(30):
            ring, inside = cell_ring_and_inside(shot, page, channel)
            assert inside not in (green, blue), (channel, inside)  # the tile itself is not painted over
            if ring != pad:
                found[channel] = ring
        return found

    enter_grid(page, "block 5")  # 80 channels: 9 columns
    press(page, "b")
    picture = src(page, "#grid-img")
    assert rings() == {0: green}
    press(page, "l", "l")
    assert rings() == {2: green}
    press(page, "ArrowDown")  # one row down: 9 tiles on
    assert status(page).startswith("fwd blocks.5:11 |") and rings() == {11: green}
    press(page, "d", "l")
    assert "(from blocks.5:11, raw, frozen)" in status(page) and rings() == {11: blue, 12: green}
    press(page, "ArrowLeft")  # on the frozen unit: its ring is the frozen one
    assert rings() == {11: blue}
    assert src(page, "#grid-img") == picture, "moving the cursor changed the grid picture"
    press(page, "l", "l", "a")  # the grid shows the backward diffs from the frozen unit, on blue-grey padding
    assert status(page).startswith("back blocks.5:13 |") and src(page, "#grid-img") != picture
    assert rings(pad=(51, 51, 128)) == {11: blue, 13: green}
    with page.expect_download() as download:  # the saved view shows the rings as the screen does
        page.keyboard.press("P")
    saved = Image.open(download.value.path()).convert("RGB")
    for channel, colour in ((11, blue), (13, green)):
        ring, _ = cell_ring_and_inside(saved, page, channel)
        assert max(abs(a - b) for a, b in zip(ring, colour)) <= 2, (channel, ring)
    press(page, "a", "ArrowUp", "ArrowUp")  # up to the layer list: no selection ring, the frozen one stays
    assert rings() == {11: blue}
    press(page, "o", "ArrowDown")  # another layer: the frozen ring belongs to blocks.5
    assert rings() == {4: green}


def test_boosts_zoom_toggles_timing_and_reset(page):
    enter_grid(page, "block 3")
    grid = src(page, "#grid-img")
    for gamma in ("0.7", "0.5", "0.3", "1"):
        press(page, "t")
        assert f"| Boost: 0/{gamma}" in status(page)
    for indiv in ("0.3", "0.5", "0.8", "1", "0"):
        press(page, "T")
        assert f"| Boost: {indiv}/1" in status(page)
    press(page, "t")
    assert src(page, "#grid-img") != grid
    press(page, "t", "t", "t")

    press(page, "z")  # the selected unit fills the grid pane
    assert page.locator("#grid-zoom").is_visible() and page.locator("#grid-img").is_hidden()
    assert page.eval_on_selector("#grid-zoom", "c => c.width") > 300
    press(page, "z")  # back is off: zoom 2 is skipped
    assert page.locator("#grid-img").is_visible() and page.locator("#grid-zoom").is_hidden()
    press(page, "b", "z", "z")  # zoom 2: the backward image in the grid pane
    assert page.locator("#grid-zoom").is_visible()
    press(page, "z", "b", "b", "b", "b")

    press(page, "5")
    assert re.search(r"\| \d+ ms$", status(page))
    press(page, "5")
    assert re.search(r"\| fwd \d+ / back \d+ / render \d+ ms$", status(page))
    press(page, "5")
    assert " ms" not in status(page)

    press(page, "ArrowUp", "8")
    assert page.locator("#predictions li").count() == 0
    press(page, "8")
    assert page.locator("#predictions li").count() == 5
    assert page.locator("#units-pane").is_visible()
    press(page, "9")
    assert page.locator("#units-pane").is_hidden()
    press(page, "s")  # no store: pattern mode explains itself and stays off
    assert status(page).startswith("fwd ") and "pattern mode needs a store" in status(page)

    press(page, "Escape")
    assert status(page) == "fwd stem.act:0 | Back: off | Boost: 0/1 | h for help"
    assert page.locator("#units-pane").is_visible() and "cursor" in layer_class(page, "stem")


def test_help_lists_every_binding(page):
    assert page.locator("#help").is_hidden()
    press(page, "h")
    assert page.locator("#help").is_visible()
    keys = keymap_keys()
    shown = page.eval_on_selector_all("#help kbd", "ks => ks.map(k => k.dataset.key)")
    assert sorted(shown) == sorted(keys)
    for key in ("ArrowLeft", "PageDown", "Escape", "J", "T", "P", "5", "8", "9", "0"):
        assert key in shown
    for binding in page.evaluate("import('/static/keymap.js').then(m => m.KEYMAP)"):
        assert binding["help"] in page.inner_text("#help")
    page.screenshot(path=str(SHOTS / "help.png"))
    press(page, "h")
    assert page.locator("#help").is_hidden()
    press(page, "ArrowRight", "h", "Escape")  # Esc closes the help, and only that
    assert page.locator("#help").is_hidden() and status(page).startswith("fwd blocks.0:0 |")


def test_saving_the_backward_image_and_the_view(page):
    press(page, "p")  # nothing to save yet
    assert "nothing to save" in status(page)
    enter_grid(page, "block 5")
    press(page, "b")
    with page.expect_download() as download:
        page.keyboard.press("p")
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert download.value.suggested_filename == "deepvis-back-blocks.5_0-gradient-raw.png"
    assert Image.open(io.BytesIO(data)).size == (224, 224)
    with page.expect_download() as download:
        page.keyboard.press("P")
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(PNG_MAGIC)
    view = Image.open(io.BytesIO(data)).convert("L")
    assert view.size == (1400, 860)
    screen = Image.open(io.BytesIO(page.screenshot())).convert("L")
    difference = ImageChops.difference(view, screen)
    assert ImageStat.Stat(difference).mean[0] < 3, "the saved view looks like the screen"
    assert ImageStat.Stat(view).stddev[0] > 30  # pictures, not empty panes
    SHOTS.mkdir(parents=True, exist_ok=True)
    view.save(SHOTS / "saved-view.png")
    difference.point(lambda v: min(255, v * 4)).save(SHOTS / "saved-view-difference.png")


def test_images_change_with_keys_and_the_resize_toggle(page):
    assert page.inner_text("#input-caption") == "astronaut.jpg · crop"
    press(page, "e")
    assert page.inner_text("#input-caption") == "chelsea.jpg · crop"
    assert predictions(page)[0] == "Egyptian cat"
    press(page, "PageDown")
    assert "espresso" in predictions(page)[:2]
    press(page, "w", "PageUp")
    assert page.inner_text("#input-caption") == "astronaut.jpg · crop"
    press(page, "w")
    assert page.inner_text("#input-caption") == "rocket.jpg · crop"
    cropped = src(page, "#input-img")
    press(page, "0")
    assert page.inner_text("#input-caption") == "rocket.jpg · stretch" and "stretch" in status(page)
    assert src(page, "#input-img") != cropped
    page.click("#btn-next")
    settle(page)
    assert page.inner_text("#input-caption") == "astronaut.jpg · stretch"


def test_moving_the_cursor_asks_only_for_views_and_the_newest_state_wins(page):
    calls, in_flight, most = [], set(), [0]

    def sent(request):
        if "/api/" in request.url:
            calls.append((request.url.split("?")[0].rsplit("/api/", 1)[-1], request.post_data))
        if request.url.endswith("/api/view"):
            in_flight.add(request)
            most[0] = max(most[0], len(in_flight))

    page.on("request", sent)
    page.on("requestfinished", lambda request: in_flight.discard(request))
    page.on("requestfailed", lambda request: in_flight.discard(request))
    press(page, "e")
    assert [c for c, _ in calls].count("inputs/file/1") == 1
    calls.clear()
    enter_grid(page, "block 2")
    for _ in range(6):  # no waiting between keys
        page.keyboard.press("l")
    settle(page)
    assert status(page).startswith("fwd blocks.2:6 |") and most[0] == 1  # never two views at once

    calls.clear()  # a burst of 7 state changes in one go: the one in flight, then only the newest
    page.evaluate("""() => {
        for (const key of ['l', 'l', 'l', 'l', 'l', 'l', 'b'])
            window.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true}));
    }""")
    settle(page)
    assert status(page).startswith("fwd blocks.2:12 | Back: gradient (from blocks.2:12, raw)")
    assert page.inner_text("#aux-caption").startswith("blocks.2:12 · max ")
    assert page.inner_text("#back-caption").startswith("gradient · raw · from blocks.2:12")
    views = [json.loads(data) for name, data in calls if name == "view"]
    assert [(v["channel"], v["back_enabled"]) for v in views] == [(7, False), (12, True)], views
    assert not [name for name, _ in calls if name.startswith("inputs")], calls  # the image is never sent again


def test_upload_by_file_picker_and_drop_and_server_errors(page, server, tmp_path):
    from deepvis.pixels.samples import sample_images

    coffee = next(p for p in sample_images() if p.stem == "coffee")
    picked = tmp_path / "my coffee.png"
    Image.open(coffee).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(picked)
    page.set_input_files("#file-input", str(picked))
    settle(page)
    assert page.inner_text("#input-caption") == "my coffee.png · crop"
    assert "espresso" in predictions(page)[:2]

    page.expected_errors.append("status of 400")
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture at all")
    expected = httpx.post(f"{server}/api/inputs/upload?name=notes.png", content=bad.read_bytes())
    assert expected.status_code == 400 and "'notes.png'" in expected.json()["error"]  # its name, not '<28 bytes>'
    page.set_input_files("#file-input", str(bad))
    settle(page)
    assert expected.json()["error"] in status(page)
    assert page.inner_text("#input-caption") == "my coffee.png · crop"  # the last good image stays

    dropped = page.evaluate_handle("""async (url) => {
        const blob = await (await fetch(url)).blob();
        const transfer = new DataTransfer();
        transfer.items.add(new File([blob], 'dropped-chelsea.png', {type: 'image/png'}));
        return transfer;
    }""", f"{server}/api/inputs/{httpx.post(f'{server}/api/inputs/file/1').json()['input']}/image.png")
    page.dispatch_event("#grid-pane", "drop", {"dataTransfer": dropped})
    settle(page)
    assert page.inner_text("#input-caption") == "dropped-chelsea.png · crop"
    assert predictions(page)[0] == "Egyptian cat"
    assert expected.json()["error"] not in status(page)  # the rejected upload's message went with the next upload


def test_webcam_frames_flow_with_back_pressure(page):
    log = []  # (phase, kind) of every frame and view request, in order

    def kind(request):
        return "frame" if "/api/inputs/frame" in request.url else "view" if request.url.endswith("/api/view") else None

    page.on("request", lambda r: kind(r) and log.append(("start", kind(r))))
    page.on("requestfinished", lambda r: kind(r) and log.append(("end", kind(r))))
    page.keyboard.press("c")
    deadline = time.monotonic() + 30
    while not re.search(r"FPS: ([1-9]|0\.[1-9])", status(page)) or log.count(("end", "frame")) < 4:
        assert time.monotonic() < deadline, status(page)
        page.wait_for_timeout(200)
    assert page.locator("#video").is_visible() and page.locator("#input-img").is_hidden()
    assert "mirrored" in page.get_attribute("#video", "class")
    assert page.inner_text("#input-caption") == "camera"
    assert len(predictions(page)) == 5
    assert "on" in page.get_attribute("#btn-camera", "class").split()
    # back-pressure: a frame goes out only after the last frame and its view came back, and no view is out
    # while a frame is on its way (the server drops the tab's previous frame when the next one arrives)
    in_flight, viewed = {"frame": 0, "view": 0}, True
    for phase, what in log:
        if phase == "start" and what == "frame":
            assert in_flight == {"frame": 0, "view": 0} and viewed, log
            viewed = False
        elif phase == "start":
            assert in_flight["frame"] == 0, log
        viewed = viewed or (phase, what) == ("end", "view")
        in_flight[what] += 1 if phase == "start" else -1
    page.keyboard.press("ArrowDown")
    page.keyboard.press("b")
    page.locator("#back-img").wait_for(state="visible")  # the panes follow the camera, back pass included
    page.keyboard.press("f")
    assert "FPS:" in status(page) and "(frozen)" in status(page)
    page.wait_for_timeout(600)
    count = log.count(("start", "frame"))
    page.wait_for_timeout(800)
    assert log.count(("start", "frame")) <= count + 1, "a frozen camera sends no frames"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "camera.png"))
    page.keyboard.press("c")
    settle(page)
    assert page.inner_text("#input-caption") == "astronaut.jpg · crop" and "FPS" not in status(page)
    assert page.locator("#video").is_hidden()


def test_docs_screenshot_of_the_full_toolbox(default_page):
    page = default_page
    # the default layers are rectified maps: the grid is sparse bright-on-black, as in the original toolbox
    assert "block 5 dw" in page.locator("#layers").inner_text()
    press(page, "e")  # chelsea
    enter_grid(page, "prob")
    target = tile_center(page, 285)
    page.mouse.click(target["x"], target["y"])
    settle(page)
    assert page.inner_text("#aux-caption").startswith("prob:285 · max 0.379 · Egyptian cat")
    press(page, "b", "b", "b", "b", "m", "m", "m", "d")  # guided backprop of 'Egyptian cat', normblur, frozen
    enter_grid(page, "block 2 dw")  # a rectified map: sparse, bright on black
    target = tile_center(page, 5)
    page.mouse.click(target["x"], target["y"])
    settle(page)
    assert status(page).startswith("fwd blocks.2.depthwise.act:5 | Back: guided (from prob:285, normblur, frozen)")
    assert page.locator("#back-img").is_visible() and page.locator("#aux-unit-img").is_visible()
    page.mouse.move(2, 2)
    docs = ROOT / "docs" / "images" / "toolbox.png"
    page.screenshot(path=str(docs))
    assert docs.read_bytes().startswith(PNG_MAGIC)


def test_pattern_mode_and_the_unit_pane_with_a_store(store_page):
    page = store_page
    page.expected_errors.append("status of 404")  # the sprite that is not there
    page.locator("#layers .layer", has_text="block 5").click()
    settle(page)
    press(page, "s")
    assert status(page).startswith("pattern blocks.5:0 |")
    assert src(page, "#grid-img").endswith("/store/blocks.5/sprite_optimized.jpg")
    sync_api.expect(page.locator("#grid-img")).to_have_js_property("naturalWidth", 180)
    box = page.locator("#grid-img").bounding_box()
    scale = box["width"] / 180
    page.mouse.click(box["x"] + (3 + 0.5) * 20 * scale, box["y"] + 0.5 * 20 * scale)  # tile 3 of the sprite
    settle(page)
    assert status(page).startswith("pattern blocks.5:3 |") and page.locator("#grid-ring").is_visible()
    sync_api.expect(page.locator("#units-body figure")).to_have_count(3)
    assert page.locator("#units-body figcaption").all_inner_texts() == ["optimized", "images", "deconv"]
    for kind in ("optimized", "images", "deconv"):
        image = page.locator(f"#units-body img[alt={kind}]")
        sync_api.expect(image).to_have_js_property("naturalWidth", 64)
    press(page, "l")
    assert status(page).startswith("pattern blocks.5:4 |")
    assert "not computed yet" in page.inner_text("#units-body")
    press(page, "o")  # blocks.6 has no sprite
    sync_api.expect(page.locator("#grid-message")).to_contain_text("no sprite for blocks.6 in the store")
    press(page, "a")  # leaves pattern mode
    assert status(page).startswith("fwd blocks.6:4 |") and page.locator("#grid-message").is_hidden()
