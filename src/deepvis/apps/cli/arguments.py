"""What the commands share on the command line: the parser, the model and preprocessing flags, argument types
(units, channel ranges, sizes, numbers, output images) and the checks of output files."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from deepvis.apps.cli.commands import COMMANDS
from deepvis.core.errors import DeepvisError
from deepvis.core.units import Unit, parse_unit

#: The preprocessing flags (``Preprocessing`` fields a flag overrides), as ``args`` attributes.
PREPROCESSING_FLAGS = ("input_size", "mean", "std", "scale", "channel_order")


class UsageError(Exception):
    """A mistake in the command line found after parsing: exit 2, like argparse's own."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with a one-line message and a hint
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_command(subparsers, name: str, parents: list[argparse.ArgumentParser] | None = None,
                **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of command ``name``, its summary from :data:`COMMANDS` (written once, listed by --help)."""
    return subparsers.add_parser(name, parents=parents or [], help=COMMANDS[name].summary, **kwargs)


def parameter_defaults(function: Callable) -> dict[str, Any]:
    """A function's keyword defaults, so a flag takes its default from the function it feeds (written once)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


# ------------------------------------------------------------------------------------------- flag groups

def common_flags() -> argparse.ArgumentParser:
    """The flags of every command: the model, its preprocessing, the pixel limit, -q and -v."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=None, metavar="SPEC",
                        help="model spec: efficientnet-lite0 (default), module.path:factory, file.py:factory, "
                             "a TorchScript, ONNX (.onnx) or Caffe (.prototxt) file, torchvision:NAME, timm:NAME, "
                             "or a model config file (.toml; see docs/model-config.md); crops, optimize --out and "
                             "serve --store use the store's own model unless --model is given")
    common.add_argument("--arch", metavar="FACTORY", help="architecture factory for a state-dict --model file")
    common.add_argument("--weights", metavar="FILE",
                        help="weights: the .caffemodel of a .prototxt, or a state dict (.pth, .safetensors) for "
                             "torchvision:/timm: and other models")
    common.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    pre = common.add_argument_group("preprocessing (overrides the model's and its config file's)")
    pre.add_argument("--input-size", type=size, metavar="H,W", help="override the model's input size")
    pre.add_argument("--channel-order", choices=["rgb", "bgr", "gray"],
                     help="the model's input channels (Caffe models: bgr)")
    pre.add_argument("--scale", type=positive_number, metavar="S",
                     help="the model's pixel values are S times the 0-255 values: 1 for Caffe models (raw_scale "
                          "255 on [0,1] images), 0.00392157 (1/255) for models fed [0,1] pixels; --mean and --std "
                          "are in these units (Caffe's transform_param scale, applied after the mean, is --std "
                          "1/scale)")
    pre.add_argument("--mean", metavar="M",
                     help="mean subtracted per channel, in the model's channel order and --scale units "
                          "(e.g. 104,117,123), or a mean image (.npy (C,H,W) or .binaryproto), centre-cropped to "
                          "the input size")
    pre.add_argument("--std", type=numbers, metavar="S", help="divisor per channel (e.g. 58.4,57.1,57.4)")
    common.add_argument("--labels", metavar="FILE", help="class labels, one per line")
    common.add_argument("--max-pixels", type=positive_int, metavar="N",
                        help="largest image decoded, in pixels (default 40000000); larger ones are refused before "
                             "decoding (the server's uploads too)")
    common.add_argument("-q", "--quiet", action="store_true", help="print less")
    common.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of errors")
    return common


def resize_flags() -> argparse.ArgumentParser:
    """--resize, for the commands that fit one image to the input size."""
    resize = argparse.ArgumentParser(add_help=False)
    resize.add_argument("--resize", choices=["crop", "stretch"], default=None,
                        help="fit images to the input size by centre crop (default) or by stretching")
    return resize


# ------------------------------------------------------------------------------------------ output files

def check_folder(path: str | Path) -> None:
    """Refuse an output whose folder does not exist (no folder is made behind the user's back)."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise DeepvisError(f"cannot write '{path}': the folder '{parent}' does not exist")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """An OSError while writing ``path`` becomes a one-line :class:`DeepvisError` naming it."""
    try:
        yield
    except OSError as exc:
        raise DeepvisError(f"cannot write '{path}': {exc.strerror or exc}") from None


# -------------------------------------------------------------------------------------- argument types

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def ratio(text: str) -> float:
    """A number in [0, 1): an opacity, a share to discard."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def output_image(text: str) -> str:
    """An output picture's name, with an extension PIL can write."""
    suffix = Path(text).suffix.lower()
    if not suffix:
        raise argparse.ArgumentTypeError(f"output {text!r} has no file extension: name it e.g. OUT.png")
    Image.init()
    if Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise argparse.ArgumentTypeError(f"cannot write images of type {suffix!r} (output {text!r}): "
                                         "use .png, .jpg, .tif or .webp")
    return text


def size(text: str) -> tuple[int, int]:
    """H,W or N (pixels)."""
    parts = text.replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W or N (pixels), got {text!r}")
    return values[0], values[1]


def channel_range(text: str) -> range:
    """FIRST-LAST or N (channels)."""
    first, dash, last = text.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()) or int(last or first) < int(first):
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST or N (channels), e.g. 0-63, got {text!r}")
    return range(int(first), int(last or first) + 1)


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object such as \'{{"lr": 100}}\', got {text!r}')
    return value


def numbers(text: str) -> tuple[float, ...]:
    """Finite numbers separated by commas (one per channel)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(v == v and abs(v) != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas (one per channel), got {text!r}")
    return values


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def unit(text: str) -> Unit:
    """A unit, parsed once here (layer:channel, @y,x, @cls, combinations); the commands take the Unit."""
    try:
        return parse_unit(text)
    except DeepvisError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
