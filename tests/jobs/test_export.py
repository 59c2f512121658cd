"""deepvis export: a static site of a store — files and layout, byte-identical reruns, resume, stale files, the CLI,
the toolbox's link, and (in headless Chromium) a crawl of every link from file:// and over a static HTTP server,
keyboard navigation, search and kind switching. Screenshots go to ``test-output/export/``; one unit page is also kept
as ``docs/images/export-unit.png``."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

import deepvis
from deepvis.jobs.crops import make_crops
from deepvis.jobs.export import export_site, site_page_url
from deepvis.jobs.findmax import find_max
from deepvis.engine.featvis import make_params
from deepvis.jobs.optimize_store import optimize_to_store

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "export"
CHROMIUM = Path(os.environ.get("DEEPVIS_CHROMIUM", "/usr/bin/chromium"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
CHANNELS = range(0, 6)


@pytest.fixture(scope="module")
def model(single_thread_torch):
    return deepvis.load_model(input_size=(112, 112))


@pytest.fixture(scope="module")
def store(model, tmp_path_factory):
    """find-max (k=3) over the sample images, crops of a few units, optimized images (2 copies) of two."""
    base = tmp_path_factory.mktemp("export")
    folder = base / "images"
    folder.mkdir()
    for path in deepvis.sample_images():
        shutil.copy(path, folder / path.name)
    store = find_max(model, folder, base / "store", layers=["blocks.3", "classifier"], k=3, progress=False)
    make_crops(model, store.root, layers=["blocks.3"], kinds=("image", "deconv", "guided"), channels=range(0, 4),
               progress=False)
    make_crops(model, store.root, layers=["classifier"], kinds=("image",), channels=range(0, 3), progress=False)
    optimize_to_store(model, store.root, ["blocks.3"], make_params("modern", steps=2, copies=2), channels=[0, 1],
                      progress=False)
    return store


@pytest.fixture(scope="module")
def site(store, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    report = export_site(store, out, channels=CHANNELS, model=model, progress=False)
    assert report.units == 12 and report.encoded == 7  # units with pictures
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_of_the_site(site, store):
    files = _files(site)
    for name in ("index.html", "search-index.js", "export.json", "assets/site.css", "assets/site.js",
                 "blocks.3/index.html", "blocks.3/0.html", "blocks.3/0/optimized.jpg", "blocks.3/0/optimized_01.jpg",
                 "blocks.3/0/image_00.jpg", "blocks.3/0/deconv_02.jpg", "blocks.3/0/guided_01.jpg",
                 "blocks.3/5.html", "classifier/index.html", "classifier/1.html", "classifier/1/image_00.jpg"):
        assert name in files, name
    assert "blocks.3/6.html" not in files and "blocks.3/5/image_00.jpg" not in files  # units left out, no crops
    assert not [n for n in files if n.endswith(".tmp")]
    manifest = json.loads(files["export.json"])
    assert manifest["budget"]["units"] == 12 and 0 < manifest["budget"]["bytes_per_unit"] < 150_000
    assert manifest["units"]["blocks.3:0"]["files"][0] == "blocks.3/0.html"
    unit = files["blocks.3/0.html"].decode()
    assert "copy 1" in unit and "method" in unit and "modern" in unit  # all copies and the method's settings
    assert "astronaut.jpg" in unit or "chelsea.jpg" in unit  # source image names
    assert "top 3 activations" in unit and 'class="bars"' in unit and 'class="hist"' in unit
    assert 'data-next="1.html"' in unit and 'data-up="index.html"' in unit and "data-prev" not in unit
    assert "goldfish" in files["classifier/1.html"].decode()  # label layers show the model's labels
    index = files["index.html"].decode()
    assert store.read_manifest().weights_sha256 in index
    assert "find-max command" in index and "receptive field" in index
    assert "optimized (modern), image, deconv, guided" in index and "<td>image</td>" in index  # pictures per layer
    search = files["search-index.js"].decode()
    assert search.splitlines()[-1].startswith("window.DEEPVIS_SEARCH = ")
    data = json.loads(search.splitlines()[-1][len("window.DEEPVIS_SEARCH = "):-1])
    assert data["layers"][0] == {"name": "blocks.3", "dir": "blocks.3", "channels": list(CHANNELS)}
    assert [1, 1, "goldfish"] in data["labels"]
    for text in (files[n].decode() for n in files if n.endswith((".html", ".js", ".css"))):
        assert "http://" not in text and "https://" not in text and "fetch(" not in text  # nothing leaves the site
    from PIL import Image

    with Image.open(site / "blocks.3/0/image_00.jpg") as crop, Image.open(site / "blocks.3/0/optimized.jpg") as opt:
        assert crop.format == opt.format == "JPEG" and max(crop.size) <= 128 and max(opt.size) <= 224


def test_two_exports_are_byte_identical_and_a_rerun_changes_no_file(site, store, model, tmp_path):
    again = export_site(store, tmp_path / "again", channels=CHANNELS, model=model, progress=False)
    assert _files(tmp_path / "again") == _files(site)
    stamps = {p: p.stat().st_mtime_ns for p in site.rglob("*")}
    report = export_site(store, site, channels=CHANNELS, model=model, progress=False)
    assert report.encoded == 0 and report.units == 12 and report.bytes_total == again.bytes_total
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*")} == stamps


def test_resume_re_encodes_only_what_is_missing_or_changed_and_drops_stale_files(store, model, tmp_path):
    out = tmp_path / "site"
    export_site(store, out, channels=CHANNELS, model=model, progress=False)
    reference = _files(out)
    (out / "blocks.3/2/guided_01.jpg").unlink()
    (out / "classifier/4.html").unlink()
    manifest = json.loads((out / "export.json").read_text())
    manifest["units"]["blocks.3:3"]["source"] = "changed"  # as if the store's records changed since
    (out / "export.json").write_text(json.dumps(manifest))
    report = export_site(store, out, channels=CHANNELS, model=model, progress=False)
    assert report.encoded == 2
    assert _files(out) == reference
    export_site(store, out, channels=range(0, 3), layers=["blocks.3"], model=model, progress=False)
    left = _files(out)
    assert "blocks.3/2.html" in left and "blocks.3/3.html" not in left and "blocks.3/3/image_00.jpg" not in left
    assert "classifier/index.html" not in left and "classifier/1.html" not in left
    with pytest.raises(deepvis.DeepvisError, match="not in the store"):
        export_site(store, out, layers=["blocks.9"], progress=False)


def test_an_interrupted_export_resumes_where_it_stopped(store, model, tmp_path, monkeypatch):
    from deepvis.jobs.export import writer

    encode, calls = writer._jpeg, []

    def interrupted(*args):
        calls.append(args)
        if len(calls) == 25:  # the third unit: two units (12 pictures each) are done
            raise KeyboardInterrupt
        return encode(*args)

    monkeypatch.setattr(writer, "_jpeg", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_site(store, tmp_path / "site", channels=CHANNELS, model=model, progress=False)
    monkeypatch.setattr(writer, "_jpeg", encode)
    done = json.loads((tmp_path / "site" / "export.json").read_text())["units"]
    assert sorted(done) == ["blocks.3:0", "blocks.3:1"]
    report = export_site(store, tmp_path / "site", channels=CHANNELS, model=model, progress=False)
    assert report.encoded == 5  # blocks.3:2, :3, classifier:0-2 (blocks.3:4, :5, classifier:3-5 have no pictures)
    export_site(store, tmp_path / "again", channels=CHANNELS, model=model, progress=False)
    assert _files(tmp_path / "site") == _files(tmp_path / "again")
    montage = store.unit_file("blocks.3", 3, "image")
    montage.rename(montage.with_suffix(".bak"))
    try:
        montage.write_bytes(b"not a jpeg")
        with pytest.raises(deepvis.DeepvisError, match="cannot read the picture image .* of blocks.3:3"):
            export_site(store, tmp_path / "bad", channels=CHANNELS, progress=False)
    finally:
        montage.with_suffix(".bak").replace(montage)


def test_layer_names_outside_the_safe_set_and_a_store_of_top_k_only(tmp_path):
    from deepvis.store import LayerRecord, Manifest, Store

    store = Store(tmp_path / "store")
    layers = {"conv1/7x7 s2": LayerRecord(3, [3, 8, 8], {"size": [7, 7], "stride": [2, 2]}, {"kind": "maps"}),
              "fc": LayerRecord(2, [2])}
    store.write_manifest(Manifest(model="m.py:build", weights_sha256="abc", preprocessing={"input_size": [32, 32]},
                                  image_root="/images", images=2, k=2, layers=layers, provenance={"command": ["x"]}))
    store.write_image_list(["a <b>.jpg", "c.jpg"])
    for name, record in layers.items():
        c = record.channels
        store.write_topk(name, [[2.0, 1.0]] * c, [[0, 1]] * c, [[1, 2]] * c if record.layout else [[-1, -1]] * c,
                         [[3, 4]] * c if record.layout else [[-1, -1]] * c)
    report = export_site(store, tmp_path / "site", progress=False)
    assert report.units == 5 and report.encoded == 0
    files = _files(tmp_path / "site")
    assert "conv1%2F7x7%20s2/2.html" in files and "conv1%2F7x7%20s2/index.html" in files
    index = files["index.html"].decode()
    assert 'href="conv1%252F7x7%2520s2/index.html"' in index  # the folder name, percent-encoded once more in URLs
    assert "7 px, stride 2" in index and "top-k only" in index
    unit = files["conv1%2F7x7%20s2/0.html"].decode()
    assert "a &lt;b&gt;.jpg" in unit and "at y=1, x=3" in unit and "<b>" not in unit
    assert "no crops made" in unit and "Optimized images" not in unit
    search = files["search-index.js"].decode()
    assert '"dir":"conv1%252F7x7%2520s2"' in search and '"labels":[]' in search


@pytest.mark.slow
def test_cli_and_the_toolbox_link(store, model):
    done = subprocess.run([sys.executable, "-m", "deepvis", "export", str(store.root), "--units", "0-2", "--layers",
                           "blocks.3", "--title", "My net"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "KB per unit" in done.stdout and "s per 1000 units" in done.stdout
    assert "<title>My net</title>" in (store.site_path / "index.html").read_text()
    bad = subprocess.run([sys.executable, "-m", "deepvis", "export", str(store.root), "--layers", "nope"], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "'nope' is not in the store" in bad.stderr and "Traceback" not in bad.stderr

    from starlette.testclient import TestClient

    from deepvis.apps.server.app import create_app
    from deepvis.apps.server.session import Toolbox

    assert site_page_url(store, "blocks.3", 1) == "blocks.3/1.html" and site_page_url(store, "blocks.3", 5) is None
    toolbox = Toolbox(model, store=store.root)
    assert toolbox.unit_images("blocks.3", 1)["export"] == "/export/blocks.3/1.html"
    assert toolbox.unit_images("blocks.3", 7)["export"] is None
    client = TestClient(create_app(toolbox))
    page = client.get("/export/blocks.3/1.html")
    assert page.status_code == 200 and "blocks.3:1" in page.text
    assert client.get("/export/assets/site.js").status_code == 200
    for outside in ("/export/../manifest.json", "/export/%2E%2E/manifest.json", "/export/..%2Fmanifest.json"):
        assert client.get(outside).status_code == 404  # the site's own root, never the store around it
    shutil.rmtree(store.site_path)


# ---------------------------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                                   "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def http_site(site):
    """``python -m http.server`` serving the site on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "http.server did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    server.terminate()
    server.wait(timeout=10)


def _open(browser, name: str):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.errors, page.requests = [], []
    page.on("pageerror", lambda exc: page.errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: page.errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    # a request the page's own navigation cancels (net::ERR_ABORTED: images still loading when a link is followed)
    # is not a broken link; any other failure is
    page.on("requestfailed", lambda req: None if "ERR_ABORTED" in (req.failure or "") else
            page.errors.append(f"failed: {req.url} ({req.failure})"))
    page.on("request", lambda req: page.requests.append(req.url))
    page.on("response", lambda res: page.errors.append(f"{res.status}: {res.url}") if res.status >= 400 else None)
    page.shot = lambda label: (SHOTS.mkdir(parents=True, exist_ok=True),
                               page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True))
    return context, page


def _crawl(browser, start: str, name: str) -> int:
    """Follow every link from ``start`` (pages, pictures, scripts, styles): none broken, none leaving the site."""
    base = start.rsplit("/", 1)[0] + "/"
    context, page = _open(browser, name)
    seen, queue, pages = set(), [start], 0
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        page.goto(url)
        page.wait_for_load_state("load")
        if url == start:
            page.shot("index")
        pages += 1
        links = page.eval_on_selector_all(
            "a[href], img[src], script[src], link[href]", "els => els.map(e => e.href || e.src)")
        for link in links:
            link = link.split("#")[0]
            if link == "data:,":  # the empty favicon: no request at all
                continue
            assert link.startswith(base), f"{url} links outside the site: {link}"
            if start.startswith("file:"):
                assert Path(unquote(urlparse(link).path)).is_file(), f"{url}: broken link {link}"
            if link.endswith(".html") and link not in seen:
                queue.append(link)
    # every image, script and style sheet the pages asked for came from the site and arrived
    assert all(r.startswith(base) for r in page.requests), [r for r in page.requests if not r.startswith(base)]
    assert not page.errors, page.errors
    context.close()
    return pages


@pytest.mark.slow
def test_crawl_every_link_from_file_and_over_http(browser, site, http_site):
    assert _crawl(browser, (site / "index.html").as_uri(), "crawl-file") == 1 + 2 + 12
    assert _crawl(browser, http_site + "index.html", "crawl-http") == 1 + 2 + 12


@pytest.mark.slow
def test_keys_search_and_kinds(browser, site):
    context, page = _open(browser, "keys")
    page.goto((site / "blocks.3" / "1.html").as_uri())
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/blocks.3/2.html")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url("**/blocks.3/1.html")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url("**/blocks.3/0.html")
    page.shot("unit")
    docs = ROOT / "docs" / "images" / "export-unit.png"
    page.screenshot(path=str(docs), full_page=True)
    page.keyboard.press("ArrowUp")
    page.wait_for_url("**/blocks.3/index.html")
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/classifier/index.html")
    page.keyboard.press("ArrowDown")  # into the layer's first unit
    page.wait_for_url("**/classifier/0.html")
    page.keyboard.press("ArrowUp")
    page.wait_for_url("**/classifier/index.html")
    page.keyboard.press("ArrowUp")
    page.wait_for_url("**/site/index.html")
    page.keyboard.press("ArrowDown")
    page.wait_for_url("**/blocks.3/index.html")
    page.keyboard.press("ArrowUp")
    page.wait_for_url("**/site/index.html")

    page.keyboard.press("/")  # search: layer:channel
    page.keyboard.type("blocks.3:4")
    page.keyboard.press("Enter")
    page.wait_for_url("**/blocks.3/4.html")
    page.keyboard.press("/")  # search by label: a list of hits, Enter takes the first
    page.keyboard.type("goldf")
    assert page.locator("#search-results li").all_inner_texts() == ["classifier:1 goldfish"]
    page.shot("search")
    page.keyboard.press("Enter")
    page.wait_for_url("**/classifier/1.html")
    assert page.inner_text("h1") == "classifier:1 — goldfish"
    page.fill("#search", "no such thing")
    assert "no unit matches" in page.inner_text("#search-results")

    page.goto((site / "blocks.3" / "index.html").as_uri())  # kinds: optimized, else the top crop, then each kind
    tile = page.locator(".grid .tile")
    assert tile.nth(0).locator("img").get_attribute("src") == "0/optimized.jpg"
    assert tile.nth(2).locator("img").get_attribute("src") == "2/image_00.jpg"
    assert tile.nth(4).get_attribute("class") == "tile empty"
    page.click(".kinds button[data-kind=deconv]")
    assert tile.nth(0).locator("img").get_attribute("src") == "0/deconv_00.jpg"
    assert page.locator(".kinds button.on").inner_text() == "deconv"
    page.keyboard.press("k")  # the next kind
    assert page.locator(".kinds button.on").inner_text() == "guided"
    assert tile.nth(3).locator("img").get_attribute("src") == "3/guided_00.jpg"
    page.shot("layer-guided")
    page.keyboard.press("k")
    assert page.locator(".kinds button.on").inner_text() == "optimized, else top image"
    page.click(".kinds button[data-kind=optimized]")
    assert tile.nth(2).get_attribute("class") == "tile empty" and not tile.nth(2).locator("img").is_visible()
    # the kind switches started image requests: let them finish, or leaving the page aborts them (a "failure")
    page.wait_for_function("Array.from(document.images).every((image) => image.complete)")
    tile.nth(1).click()
    page.wait_for_url("**/blocks.3/1.html")
    assert not page.errors, page.errors
    context.close()


@pytest.mark.slow
def test_the_live_toolbox_links_a_units_exported_page(browser, store, model):
    import threading

    import uvicorn

    from deepvis.apps.server.app import create_app
    from deepvis.apps.server.session import Toolbox

    export_site(store, store.site_path, layers=["blocks.3"], channels=CHANNELS, progress=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    from deepvis.models.efficientnet_lite import block_output_layers

    toolbox = Toolbox(model, store=store.root, layers=block_output_layers())  # the list with blocks.3 itself
    server = uvicorn.Server(uvicorn.Config(create_app(toolbox), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        context, page = _open(browser, "toolbox")
        page.goto(base + "/")
        page.wait_for_selector("body[data-busy='0']", state="attached")
        page.locator("#layers .layer", has_text=re.compile(r"^block 3$")).click()
        link = page.locator("#units-body .export-link a")
        link.wait_for()
        assert link.get_attribute("href") == "/export/blocks.3/0.html"
        page.shot("unit-pane")
        page.goto(base + "/export/blocks.3/0.html")  # served from the site's own root, under the app's CSP
        assert page.inner_text("h1") == "blocks.3:0"
        page.keyboard.press("ArrowRight")
        page.wait_for_url("**/export/blocks.3/1.html")
        assert not page.errors, page.errors
        context.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        shutil.rmtree(store.site_path)


def test_the_job_takes_a_frozen_config_and_reports_what_it_wrote(store, model, tmp_path, capsys):
    import dataclasses

    from deepvis.jobs.export import ExportConfig, run_export

    assert {f.name: f.default for f in dataclasses.fields(ExportConfig)} == {
        "layers": None, "channels": None, "title": None, "progress": True}
    config = ExportConfig(layers=["blocks.3"], channels=range(0, 3), progress=False)
    assert config.layers == ("blocks.3",) and config.channels == (0, 1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.title = "another"  # type: ignore[misc]
    out = tmp_path / "site"
    report = run_export(store, out, config, model)
    assert report.path == report.site == out and report.layers == ["blocks.3"] and report.units == 3
    assert report.pages == len(list(out.rglob("*.html"))) == 3 + 1 + 1  # the units, the layer, the index
    assert report.bytes_total == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    # export_site: the same settings as keywords, the same site
    export_site(store, tmp_path / "again", model=model, layers=["blocks.3"], channels=range(0, 3), progress=False)
    assert _files(tmp_path / "again") == _files(out)
    with pytest.raises(TypeError):
        export_site(store, tmp_path / "bad", colour="red")
    assert capsys.readouterr().out == ""  # the library never prints
