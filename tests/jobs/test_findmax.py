"""find-max against brute force: batch sizes, a SIGKILL and --resume, two torchrun processes, broken files."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import deepvis
from deepvis.jobs.findmax import find_max
from deepvis.store import Store

skimage_data = pytest.importorskip("skimage.data")

SIZE = (112, 112)
LAYERS = ["blocks.3", "classifier"]
SOURCES = ["chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "horse", "brick", "grass", "gravel",
           "moon", "page", "text", "retina", "hubble_deep_field", "motorcycle_left", "color", "cell"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """At least 200 real photos: scikit-image's samples plus crops and flips of them."""
    folder = tmp_path_factory.mktemp("images")
    count = 0
    for name in SOURCES:
        try:
            base = Image.fromarray(np.asarray(getattr(skimage_data, name)())).convert("RGB")
        except Exception:  # an image this scikit-image version does not ship offline
            continue
        base.thumbnail((160, 160))
        w, h = base.size
        variants = [base, ImageOps.mirror(base), ImageOps.flip(base), base.rotate(90, expand=True),
                    base.rotate(180)]
        for i in range(9):
            left, top = (i % 3) * w // 6, (i // 3) * h // 6
            variants.append(base.crop((left, top, left + w // 2, top + h // 2)))
        for j, image in enumerate(variants):
            image.save(folder / f"{name}_{j:02d}.png")
            count += 1
    assert count >= 200
    return folder


@pytest.fixture(scope="module")
def small_model():
    return deepvis.load_model(input_size=SIZE)


@pytest.fixture(scope="module")
def brute_force(image_dir, small_model):
    """Every activation of every image kept in memory, then each channel's entries sorted."""
    _, files = deepvis.pixels.images.find_images(image_dir)
    x = torch.stack([small_model.preprocessing.to_tensor(deepvis.load_image(f)) for f in files])
    with torch.no_grad(), deepvis.Probe(small_model, LAYERS) as probe:
        small_model.net(x)
    expected = {}
    for layer in LAYERS:
        acts = probe[layer]
        n, c = acts.shape[:2]
        flat = acts.reshape(n, c, -1)
        width = acts.shape[-1] if acts.dim() == 4 else 1
        values, images, ys, xs = [], [], [], []
        for channel in range(c):
            entries = []
            for image in range(n):
                row = flat[image, channel]
                where = int(row.argmax())  # the first maximum
                entries.append((-float(row[where]), image, where))
            entries.sort()
            top = entries[:9]
            values.append([-v for v, _, _ in top])
            images.append([i for _, i, _ in top])
            ys.append([w // width if acts.dim() == 4 else -1 for _, _, w in top])
            xs.append([w % width if acts.dim() == 4 else -1 for _, _, w in top])
        expected[layer] = {"values": np.array(values, np.float32), "images": np.array(images),
                           "y": np.array(ys), "x": np.array(xs)}
    return expected


def assert_same_topk(got: dict, expected: dict, atol: float = 1e-4):
    """Equal top-k; where image order differs the two values must be a tie (fully connected layers' matmuls can
    differ by ~1e-6 between batch sizes)."""
    assert np.allclose(got["values"], expected["values"], atol=atol, rtol=0)
    differ = got["images"] != expected["images"]
    assert np.all(np.abs(got["values"][differ] - expected["values"][differ]) < atol)
    same = ~differ
    assert np.array_equal(got["y"][same], expected["y"][same]) and np.array_equal(got["x"][same], expected["x"][same])
    assert differ.mean() < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_equals_brute_force_for_any_batch_size(tmp_path, image_dir, small_model, brute_force, batch_size):
    store = find_max(small_model, image_dir, tmp_path / "store", layers=LAYERS, k=9, batch_size=batch_size,
                     progress=False)
    for layer in LAYERS:
        assert_same_topk(store.read_topk(layer), brute_force[layer])
    manifest = store.read_manifest()
    assert manifest.images >= 200 and manifest.skipped == [] and manifest.k == 9
    assert manifest.layers["blocks.3"].receptive_field["size"] == 35
    assert manifest.layers["classifier"].receptive_field is None
    assert store.read_topk("classifier")["y"].max() == -1


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "deepvis", *args], capture_output=True, text=True, env=ENV,
                          timeout=300, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, image_dir, brute_force):
    out = tmp_path / "store"
    command = [sys.executable, "-m", "deepvis", "find-max", str(image_dir), "--out", str(out), "--layers", *LAYERS,
               "--input-size", "112,112", "--batch-size", "4", "--checkpoint-every", "12", "-q"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    checkpoint = Store(out).checkpoint(0, 1)
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the scan ended before it could be killed"
    assert checkpoint.exists() and not Store(out).manifest_path.exists()
    done = torch.load(checkpoint, weights_only=True)["next"]
    assert 0 < done < 200
    rerun = _cli("find-max", str(image_dir), "--out", str(out), "--layers", *LAYERS, "--input-size", "112,112")
    assert rerun.returncode == 1 and "--resume" in rerun.stderr  # refuses to start over silently
    resumed = _cli("find-max", str(image_dir), "--out", str(out), "--layers", *LAYERS, "--input-size", "112,112",
                   "--batch-size", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not checkpoint.exists()
    for layer in LAYERS:
        assert_same_topk(Store(out).read_topk(layer), brute_force[layer])


@pytest.mark.slow
def test_two_torchrun_processes_equal_one(tmp_path, image_dir, brute_force):
    out = tmp_path / "store"
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "deepvis", "find-max", str(image_dir), "--out", str(out), "--layers", *LAYERS,
         "--input-size", "112,112", "--batch-size", "16", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun's workers too
        process.communicate()
        raise
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = Store(out).read_manifest()
    assert manifest.provenance["processes"] == 2
    for layer in LAYERS:
        assert_same_topk(Store(out).read_topk(layer), brute_force[layer])


def test_broken_files_are_skipped_and_listed(tmp_path, small_model):
    folder = tmp_path / "mixed"
    (folder / "deep").mkdir(parents=True)
    Image.fromarray(skimage_data.chelsea()).save(folder / "cat.JPG")
    Image.fromarray(skimage_data.coffee()).save(folder / "deep" / "coffee.png")
    (folder / "notes.jpg").write_text("this is text, not a picture")
    whole = (folder / "cat.JPG").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "empty.png").write_bytes(b"")
    (folder / "gone.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    unreadable = folder / "locked.png"
    Image.fromarray(skimage_data.astronaut()).save(unreadable)
    unreadable.chmod(0)
    (folder / "readme.txt").write_text("not an image extension: ignored")
    store = find_max(small_model, folder, tmp_path / "store", layers=["classifier"], k=2, workers=2, batch_size=3,
                     progress=False)  # decoding in worker processes, failures included
    manifest = store.read_manifest()
    reasons = {entry.path: entry.reason for entry in manifest.skipped}
    assert set(reasons) >= {"notes.jpg", "truncated.jpg", "empty.png", "gone.jpg"}
    assert "not an image" in reasons["notes.jpg"] and "empty" in reasons["empty.png"]
    assert "not found" in reasons["gone.jpg"]
    if os.geteuid() != 0:
        assert "locked.png" in reasons
    images = store.read_image_list()
    top = store.read_topk("classifier")
    assert images[top["images"][285, 0]] == "cat.JPG"  # Egyptian cat: the cat photo
    assert images[top["images"][967, 0]] == "deep/coffee.png"  # espresso


def test_refuses_to_overwrite_and_checks_settings(tmp_path, small_model):
    folder = tmp_path / "two"
    folder.mkdir()
    Image.fromarray(skimage_data.chelsea()).save(folder / "a.png")
    out = tmp_path / "store"
    find_max(small_model, folder, out, layers=["classifier"], k=1, progress=False)
    with pytest.raises(deepvis.DeepvisError, match="already holds a store"):
        find_max(small_model, folder, out, layers=["classifier"], k=1, progress=False)
    assert find_max(small_model, folder, out, layers=["classifier"], k=1, resume=True, progress=False)
    find_max(small_model, folder, out, layers=["classifier"], k=2, force=True, progress=False)
    assert Store(out).read_manifest().k == 2
    with pytest.raises(deepvis.DeepvisError, match="neither a directory nor a list file"):
        find_max(small_model, tmp_path / "missing", tmp_path / "s2", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(deepvis.DeepvisError, match="no images found"):
        find_max(small_model, tmp_path / "empty", tmp_path / "s3", progress=False)
