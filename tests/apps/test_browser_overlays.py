"""The input pane's overlays in a real browser: attribution maps of the selected unit (changing with the unit, the
method and the webcam's frames) and, on a vision transformer, the attention of the token under the mouse and the
attention rollout. Reuses test_browser's fixtures and helpers; screenshots for the docs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: zoo.py
from test_browser import (PNG_MAGIC, ROOT, browser, input_id, model, open_page, page, press, serve,  # noqa: E402,F401
                          server, settle, src, status)

import deepvis  # noqa: E402
from deepvis.apps.server.session import Toolbox  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread_torch")]

ZOO = Path(__file__).parents[1] / "zoo.py"
DOCS = ROOT / "docs" / "images"


@pytest.fixture(scope="module")
def vit_server(single_thread_torch):
    """A ViT of ViT-B/16's input shape (224x224, 16-pixel patches: a 14x14 grid, 256 features), two blocks."""
    yield from serve(Toolbox(deepvis.load_model(f"{ZOO}:vit_base_shape")))


@pytest.fixture()
def vit_page(browser, vit_server, request):  # noqa: F811
    yield from open_page(browser, vit_server, request.node.name)


def overlay(page) -> str | None:
    return src(page, "#overlay-img") if page.locator("#overlay-img").is_visible() else None


def select_layer(page, name: str) -> None:
    page.locator(f"#layers .layer[data-layer='{name}']").click()
    settle(page)


def test_attribution_overlay_follows_the_unit_the_method_and_the_webcam(page):  # noqa: F811
    press(page, "e")  # chelsea
    select_layer(page, "classifier")
    press(page, "ArrowDown")
    page.keyboard.type("L" * 95)  # 285 units to the right (3 each): the cat
    settle(page)
    assert status(page).startswith("fwd classifier:285 |")
    press(page, "v")
    assert "Overlay: gradcam α 0.5" in status(page)
    assert page.locator("#input-img").is_hidden()
    cat = overlay(page)
    assert cat and page.inner_text("#input-caption") == "gradcam of classifier:285 at head.act · α 0.5"
    press(page, "l")  # another unit, another map
    assert page.inner_text("#input-caption").startswith("gradcam of classifier:286") and overlay(page) != cat
    press(page, "j")
    assert overlay(page) == cat  # cached, and the same picture
    seen = {"gradcam": cat}
    for method in ("gradcam++", "guided-gradcam", "input-x-gradient"):
        press(page, "g")
        assert f"Overlay: {method}" in status(page)
        assert page.inner_text("#input-caption").startswith(f"{method} of classifier:285")
        seen[method] = overlay(page)
    assert len(set(seen.values())) == 4
    press(page, "=", "=")
    assert "α 0.7" in status(page) and overlay(page) != seen["input-x-gradient"]
    with page.expect_download() as download:
        page.keyboard.press("V")
    assert download.value.suggested_filename == "deepvis-overlay-input-x-gradient-classifier_285.png"
    assert Path(download.value.path()).read_bytes().startswith(PNG_MAGIC)
    press(page, "g", "g", "g", "g")  # smoothgrad, integrated-gradients, back to gradcam, gradcam++
    press(page, "v")
    assert "Overlay" not in status(page) and page.locator("#input-img").is_visible() and overlay(page) is None
    press(page, "v")
    assert "Overlay: gradcam++" in status(page)
    press(page, "-", "-")  # back to 0.5 for the screenshot
    page.mouse.move(2, 2)
    page.screenshot(path=str(DOCS / "attribution.png"))

    page.keyboard.press("c")  # the overlay follows the camera's frames
    frames, deadline = set(), time.monotonic() + 60
    while len(frames) < 3:
        assert time.monotonic() < deadline, (status(page), frames)
        current = overlay(page)
        if current:
            frames.add(current)
        page.wait_for_timeout(100)
    assert page.locator("#video").is_hidden()
    page.keyboard.press("c")
    settle(page)


def test_vit_attention_of_the_token_under_the_mouse_and_the_rollout(vit_page):
    page = vit_page
    select_layer(page, "blocks.1")  # 256 tiles of 14x14: the patch grid
    press(page, "v", *["g"] * 7)  # gradcam ... integrated-gradients, rollout, attention
    assert "Overlay: attention" in status(page)
    assert page.inner_text("#input-caption").startswith("attention of CLS at blocks.1.attn, mean of heads")
    cls = overlay(page)
    box = page.locator("#grid-img").bounding_box()
    natural = page.eval_on_selector("#grid-img", "img => [img.naturalWidth, img.naturalHeight]")
    grid = page.request.post(f"{page.url}api/view", data={"input": input_id(page), "layer": "blocks.1"}).json()["grid"]
    assert (grid["tile_h"], grid["tile_w"]) == (14, 14) and grid["rows"] * grid["cols"] >= 256
    scale, pad = box["width"] / natural[0], grid["pad"]

    def hover(y: int, x: int) -> str:
        # tile 0 starts after its padding; each token is one pixel of the 14x14 tile, scaled
        page.mouse.move(box["x"] + (pad + x + 0.5) * scale, box["y"] + (pad + y + 0.5) * scale)
        settle(page)
        return page.inner_text("#input-caption")

    assert hover(2, 3).startswith("attention of token @2,3 at blocks.1.attn")
    first = overlay(page)
    assert hover(9, 11).startswith("attention of token @9,11 at blocks.1.attn") and overlay(page) != first
    assert first != cls
    press(page, "y")
    assert "head 0" in page.inner_text("#input-caption")
    press(page, "y")
    assert "head 1" in page.inner_text("#input-caption")
    page.screenshot(path=str(DOCS / "vit-attention.png"))
    select_layer(page, "blocks.0")  # the attention of the selected block: blocks.0's
    assert hover(9, 11).startswith("attention of token @9,11 at blocks.0.attn")
    press(page, "g")  # wraps around to gradcam; then to rollout
    press(page, *["g"] * 6)
    assert "Overlay: rollout" in status(page)
    assert hover(4, 4).startswith("rollout of token @4,4 up to blocks.0.attn") and overlay(page)
    page.mouse.move(2, 2)
    settle(page)
    assert page.inner_text("#input-caption").startswith("rollout of CLS up to blocks.0.attn")
