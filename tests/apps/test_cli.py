"""The ``deepvis`` command: exit codes (0 ok, 2 bad usage, 1 other errors), one-line error messages naming the bad
value (never a traceback), and the design's output formats. Most tests call ``main(argv)`` in this process (fast);
a few run the installed ``deepvis`` command in a subprocess (exit codes, --help, one real command)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import deepvis
from deepvis.apps import cli
from deepvis.apps.cli import arguments
from deepvis.apps.cli import backprop as backprop_command
from deepvis.apps.cli import layers as layers_command
from deepvis.jobs.findmax import FindMaxConfig
from deepvis.jobs.optimize_store import OptimizeStoreConfig
from deepvis.store import Store

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def run_deepvis(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed ``deepvis`` console script (``python -m deepvis`` where it is not on PATH)."""
    command = [shutil.which("deepvis")] if shutil.which("deepvis") else [sys.executable, "-m", "deepvis"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: the work is small
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def run_main(capsys, *args) -> subprocess.CompletedProcess:
    """``main(argv)`` in this process, its exit status and output as a subprocess's would be."""
    argv = list(map(str, args))
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own usage errors and --help
        code = exc.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *names: str) -> None:
    context = f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.returncode == code, context
    assert "Traceback" not in result.stderr, context
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, context
    assert "error" in lines[0], context
    for name in names:
        assert name in lines[0], f"{name!r} not named\n{context}"


@pytest.fixture(scope="module")
def files(tmp_path_factory, skimage_pngs):
    folder = tmp_path_factory.mktemp("cli")
    notes = folder / "notes.jpg"
    notes.write_text("not a picture\n")
    bomb = folder / "bomb.png"
    data = bytearray(skimage_pngs["chelsea"].read_bytes()[:33])  # signature and IHDR of a real PNG
    data[16:24] = (20000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    bomb.write_bytes(bytes(data) + b"\0" * 64)
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    no_images = folder / "no-images"  # a folder stands for its images: one without any is an error
    no_images.mkdir()
    (no_images / "readme.txt").write_text("no pictures here\n")
    return {**skimage_pngs, "notes": notes, "bomb": bomb, "empty": empty, "folder": no_images,
            "missing": folder / "missing.png", "out": folder / "out.png"}


# ---------------------------------------------------------------------------------------------- errors

ERROR_CASES = {
    # name: (arguments, with {key} standing for files[key]; expected exit status; values the message names)
    "malformed_unit": (["backprop", "{chelsea}", "--unit", "blocks.5:abc", "-o", "{out}"], 2, ["blocks.5:abc"]),
    "malformed_position": (["backprop", "{chelsea}", "--unit", "blocks.5:3@1", "-o", "{out}"], 2, ["blocks.5:3@1"]),
    "missing_unit": (["backprop", "{chelsea}", "-o", "{out}"], 2, ["--unit"]),
    "bad_output_type": (["backprop", "{chelsea}", "--unit", "blocks.5:3", "-o", "out.xyz"], 2, ["out.xyz"]),
    "bad_top": (["predict", "{chelsea}", "--top", "0"], 2, ["--top", "0"]),
    "unknown_layer": (["backprop", "{chelsea}", "--unit", "no.such.layer:3", "-o", "{out}"], 1, ["no.such.layer"]),
    "channel_out_of_range": (["backprop", "{chelsea}", "--unit", "blocks.5:100000", "-o", "{out}"], 1,
                             ["100000", "blocks.5"]),
    "position_out_of_range": (["backprop", "{chelsea}", "--unit", "blocks.5:3@999,0", "-o", "{out}"], 1,
                              ["999,0"]),
    "unreadable_image": (["backprop", "{notes}", "--unit", "blocks.5:3", "-o", "{out}"], 1, ["{notes}"]),
    "unknown_model": (["layers", "--model", "no_such_model_spec"], 1, ["no_such_model_spec"]),
    "unwritable_output": (["backprop", "{chelsea}", "--unit", "blocks.5:3", "-o", "{empty}/out.png"], 1,
                          ["{empty}/out.png"]),
}


def _fill(items, files):
    return [item.format(**files) for item in items]


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_is_one_line_naming_the_value(case, files, capsys):
    arguments_, code, names = ERROR_CASES[case]
    assert_one_line_error(run_main(capsys, *_fill(arguments_, files)), code, *_fill(names, files))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["malformed_unit", "unreadable_image"])
def test_the_installed_command_exits_with_one_line(case, files):
    arguments_, code, names = ERROR_CASES[case]
    assert_one_line_error(run_deepvis(*_fill(arguments_, files)), code, *_fill(names, files))


def test_the_installed_command_helps_quickly_without_torch():
    """``deepvis --help`` lists every command without importing any command's libraries (torch, the server)."""
    result = run_deepvis("--help")
    assert result.returncode == 0, result.stderr
    for name in ("predict", "layers", "backprop", "find-max", "optimize", "serve", "export"):
        assert name in result.stdout
    code = ("import sys; from deepvis.apps.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "print([m for m in ('torch', 'starlette', 'uvicorn') if m in sys.modules], file=sys.stderr)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert loaded.stderr.strip().splitlines()[-1] == "[]", loaded.stderr
    assert run_deepvis("--version").stdout.strip() == f"deepvis {deepvis.__version__}"
    assert run_deepvis("no-such-command").returncode == 2


# --------------------------------------------------------------------------------------------- predict

EXPECTED_TOP = {"chelsea": (285, "Egyptian cat"), "coffee": (967, "espresso"), "camera": (872, "tripod")}


def test_predict_json_format_and_a_bad_image_among_good_ones(files, capsys):
    images = [files["chelsea"], files["coffee"], files["notes"], files["camera"]]
    result = run_main(capsys, "predict", *images, "--json", "--top", 3)
    assert_one_line_error(result, 1, str(files["notes"]))  # the good ones still printed, exit non-zero
    entries = json.loads(result.stdout)
    assert isinstance(entries, list)
    assert [entry["image"] for entry in entries] == [str(files[name]) for name in ("chelsea", "coffee", "camera")]
    for entry, name in zip(entries, ("chelsea", "coffee", "camera")):
        assert set(entry) == {"image", "top"}
        assert len(entry["top"]) == 3
        for p in entry["top"]:
            assert set(p) == {"index", "label", "prob"}
            assert isinstance(p["index"], int) and isinstance(p["label"], str) and isinstance(p["prob"], float)
            assert deepvis.imagenet_labels()[p["index"]] == p["label"]
        probs = [p["prob"] for p in entry["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < probs[-1] <= probs[0] <= 1
        assert (entry["top"][0]["index"], entry["top"][0]["label"]) == EXPECTED_TOP[name]


def test_predict_text_reports_each_bad_image_on_its_own_line(files, capsys):
    bad = [files["missing"], files["folder"], files["empty"], files["bomb"], files["notes"]]
    result = run_main(capsys, "predict", files["chelsea"], *bad, "--top", 2)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(bad), result.stderr
    for line, path in zip(lines, bad):
        assert line.startswith("deepvis: error: ") and str(path) in line, line
    assert str(files["chelsea"]) in result.stdout and "Egyptian cat" in result.stdout


# ---------------------------------------------------------------------------------------------- layers

def test_layers_json(model, capsys):
    result = run_main(capsys, "layers", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [e["name"] for e in entries] == [i.name for i in model.layers() if i.default]
    for entry in entries:
        assert {"name", "type", "shape", "receptive_field", "shared"} <= set(entry)
        assert isinstance(entry["name"], str) and isinstance(entry["type"], str)
        assert entry["shape"] is None or all(isinstance(n, int) and n > 0 for n in entry["shape"])
        assert isinstance(entry["shared"], bool)
        rf = entry["receptive_field"]
        assert rf is None or (isinstance(rf["size"], int) and isinstance(rf["stride"], int))


# -------------------------------------------------------------------------------------------- backprop

def _input_size(model) -> tuple[int, int]:
    height, width = model.preprocessing.input_size
    return width, height


def _assert_png_of_size(path, size) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        assert np.asarray(image).std() > 0  # not blank


@pytest.mark.slow
@pytest.mark.parametrize("mode,image_filter", [("guided", "gray")])
def test_backprop_command_writes_a_png_of_the_input_size(tmp_path, files, model, mode, image_filter):
    out = tmp_path / f"{mode}.png"
    result = run_deepvis("backprop", files["chelsea"], "--unit", "blocks.5:3", "--mode", mode,
                         "--filter", image_filter, "-o", out)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    _assert_png_of_size(out, _input_size(model))


def test_backprop_every_mode_and_filter(tmp_path, files, model, monkeypatch, capsys):
    monkeypatch.setattr(backprop_command, "command_model", lambda args: model)  # without reloading the model
    for mode in deepvis.MODES:
        for image_filter in deepvis.FILTERS:
            out = tmp_path / f"{mode}-{image_filter}.png"
            assert cli.main(["backprop", str(files["chelsea"]), "--unit", "blocks.5:3", "--mode", mode,
                             "--filter", image_filter, "-o", str(out), "-q"]) == 0
            _assert_png_of_size(out, _input_size(model))
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------------------------- unexpected failures

def _failing_model(args):
    import warnings

    warnings.warn("a library warning\nspread over two lines")
    raise RuntimeError("something broke\ninside")


def test_unexpected_errors_and_warnings_stay_on_one_line_each(monkeypatch, capsys):
    monkeypatch.setattr(layers_command, "command_model", _failing_model)
    assert cli.main(["layers"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == "deepvis: warning: a library warning spread over two lines"
    assert lines[1].startswith("deepvis: internal error: RuntimeError: something broke inside") and "-v" in lines[1]
    with pytest.raises(RuntimeError):  # -v: the traceback, for a bug report
        cli.main(["layers", "-v"])


def test_backprop_usage_mistakes(tmp_path, skimage_pngs):
    image = str(skimage_pngs["chelsea"])
    assert cli.main(["backprop", image, "--unit", "blocks.3:5@2,3", "--signal", "argmax", "-o",
                     str(tmp_path / "x.png")]) == 2
    assert cli.main(["backprop", image, "--unit", "blocks.3:5", "-o", str(tmp_path / "no" / "x.png")]) == 1
    assert not (tmp_path / "no").exists()  # no folder made behind the user's back


# ----------------------------------------------------------------------------- parse once, read once, defaults once

def test_backprop_parses_its_unit_once(tmp_path, skimage_pngs, model, monkeypatch):
    parsed = []
    real = arguments.parse_unit
    monkeypatch.setattr(arguments, "parse_unit", lambda text: parsed.append(text) or real(text))
    monkeypatch.setattr(backprop_command, "command_model", lambda args: model)
    assert cli.main(["backprop", str(skimage_pngs["chelsea"]), "--unit", "blocks.5:3", "-o",
                     str(tmp_path / "x.png"), "-q"]) == 0
    assert parsed == ["blocks.5:3"]


def test_find_max_force_reads_the_manifest_once(tmp_path, skimage_pngs, monkeypatch, capsys):
    images = tmp_path / "images.txt"
    images.write_text("\n".join(str(skimage_pngs[name]) for name in ("chelsea", "coffee")) + "\n")
    out = tmp_path / "store"
    assert cli.main(["find-max", str(images), "--out", str(out), "--layers", "blocks.1", "--k", "1", "-q"]) == 0
    reads = []
    real = Store.read_manifest
    monkeypatch.setattr(Store, "read_manifest", lambda self: reads.append(self.root) or real(self))
    assert cli.main(["find-max", str(images), "--out", str(out), "--force"]) == 0
    assert len(reads) == 1
    captured = capsys.readouterr()
    assert "re-scanning the store with its model and layers" in captured.err
    assert f"wrote {out}: top-{FindMaxConfig.k} of 2 images for 1 layers; 0 images skipped" in captured.out


def test_the_flags_take_their_defaults_from_the_job_configs():
    parser = cli.build_parser()
    found = parser.parse_args(["find-max", "images", "--out", "store"])
    assert (found.k, found.batch_size, found.workers, found.checkpoint_every) == (
        FindMaxConfig.k, FindMaxConfig.batch_size, FindMaxConfig.workers, FindMaxConfig.checkpoint_every)
    optimized = parser.parse_args(["optimize", "--out", "store", "--layers", "fc"])
    assert optimized.objective == OptimizeStoreConfig.objective and optimized.batch_size is None
    accentuated = parser.parse_args(["accentuate", "x.png", "--unit", "fc:1", "-o", "y.png"])
    assert (accentuated.steps, accentuated.lr, accentuated.reg) == (64, 0.05, 20.0)
