"""The ``deepvis`` command: thin glue from argparse to the public API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from deepvis.core.errors import DeepvisError, one_line
from deepvis.core.units import parse_unit


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with a one-line message and a hint
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_PREPROCESSING_FLAGS = ("input_size", "mean", "std", "scale", "channel_order")


def _model(args):
    from deepvis.models import DEFAULT_MODEL, load_model

    overrides = {key: getattr(args, key) for key in _PREPROCESSING_FLAGS if getattr(args, key, None) is not None}
    return load_model(args.model or DEFAULT_MODEL, device=args.device, arch=getattr(args, "arch", None),
                      weights=getattr(args, "weights", None), labels=getattr(args, "labels", None), **overrides)


def _store_model(args, store, force: bool = False):
    """The model of a command that works on a store: the store's own, loaded from its manifest's recipe (files and
    network checked against its hashes), unless --model is given; other model flags change the recipe's settings.
    Any model other than the store's is refused unless ``force``. A folder without a manifest: the flags' model."""
    from deepvis.jobs.provenance import check_model, model_from_manifest
    from deepvis.store import Store

    store = Store(store)
    if not store.exists():
        return _model(args)
    manifest = store.read_manifest()
    if args.model is None:
        given = {key: getattr(args, key) for key in ("arch", "weights", "labels") + _PREPROCESSING_FLAGS
                 if getattr(args, key, None) is not None}
        return model_from_manifest(store, device=args.device, force=force, **given)
    if args.input_size is None:
        args.input_size = manifest.input_size
    model = _model(args)
    check_model(store, model, force=force, manifest=manifest)
    return model


def _cmd_predict(args) -> int:
    from deepvis.pixels.images import image_arguments
    from deepvis.engine.predict import predict_images

    images = image_arguments(args.images, samples=args.samples)
    if not images:
        raise _UsageError("give at least one IMAGE, or --samples for the bundled sample images")
    failures = []

    def report(_image: str, exc: DeepvisError) -> None:
        failures.append(exc)
        print(f"deepvis: error: {one_line(exc)}", file=sys.stderr)

    predicted = predict_images(_model(args), images, top=args.top, resize=args.resize, on_error=report)
    # the bundled samples are named by file name, the user's images as given
    results = [{"image": Path(image).name if args.samples and image not in args.images else image,
                "top": [p.to_json() for p in top]} for image, top in predicted]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(result["image"])
            for p in result["top"]:
                print(f"  {p['prob']:7.2%}  {p['index']:4d}  {p['label']}")
    return 1 if failures else 0


def _cmd_layers(args) -> int:
    from deepvis.engine.receptive_field import receptive_fields

    model = _model(args)
    infos = [i for i in model.layers() if (args.all or i.default) and i.probeable]
    # Growing the input until deep fields fit costs seconds per layer: only for the default layers.
    fields = receptive_fields(model, [i.name for i in infos],
                              max_input=max(model.preprocessing.input_size) if args.all else 1024)
    for info in infos:
        field = fields.get(info.name)
        info.receptive_field = field.to_json() if field is not None else None
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=2))
        return 0
    width = max((len(i.name) for i in infos), default=5)
    for info in infos:
        field = info.receptive_field
        rf = f"rf {'>=' if field.get('clipped') else ''}{field['size']} stride {field['stride']}" if field else ""
        print(f"{info.name:<{width}}  {info.type:<18} {info.describe():<20} {rf or 'whole input'}")
    if not args.all:
        print(f"({len(infos)} default layers of {len(model.layers())}; --all lists every layer; layout and channels x "
              "height x width (+E: extra tokens such as CLS); rf: receptive field size and stride in input pixels, "
              "'>=' where larger than the largest input tried)", file=sys.stderr)
    return 0


def _cmd_backprop(args) -> int:
    from deepvis.engine.backprop import backprop
    from deepvis.pixels.render import save_image

    if args.signal is not None and args.unit.position is not None:
        raise _UsageError(f"--signal {args.signal} does not apply to '{args.unit}': a unit with @y,x starts from a "
                          "one-hot at that position")
    parent = Path(args.output).parent
    if not parent.is_dir():
        raise DeepvisError(f"cannot write '{args.output}': the folder '{parent}' does not exist")
    model = _model(args)
    result = backprop(model, args.image, args.unit, mode=args.mode, signal=args.signal or "map",
                      resize=args.resize)
    try:
        save_image(result.image(args.filter), args.output)
    except OSError as exc:
        raise DeepvisError(f"cannot write '{args.output}': {exc.strerror or exc}") from None
    note = ""
    if args.mode != "gradient" and result.rectifiers_modified == 0:
        note = (f" (warning: no rectifier lies between the input and {result.unit.layer}, so {args.mode} equals the "
                "plain gradient here)")
    if not args.quiet:
        print(f"wrote {args.output}: {args.mode} of {result.unit} ({result.signal}), filter {args.filter}, "
              f"{result.rectifiers_modified} rectifier ops modified{note}")
    return 0


def _cmd_attention(args) -> int:
    from deepvis.engine.attention import attention_map
    from deepvis.pixels.render import save_image

    parent = Path(args.output).parent
    if not parent.is_dir():
        raise DeepvisError(f"cannot write '{args.output}': the folder '{parent}' does not exist")
    model = _model(args)
    result = attention_map(model, args.image, layer=args.layer, head=args.head, token=args.token,
                           rollout=args.rollout, head_fusion=args.head_fusion, discard=args.discard,
                           resize=args.resize)
    try:
        save_image(result.overlay(args.alpha), args.output)
    except OSError as exc:
        raise DeepvisError(f"cannot write '{args.output}': {exc.strerror or exc}") from None
    if not args.quiet:
        what = (f"rollout of token {result.token} up to {result.layer} ({result.head_fusion} of heads"
                f"{f', discard {result.discard:g}' if result.discard else ''})" if result.rollout else
                f"attention of token {result.token} at {result.layer}, "
                f"{f'head {result.head}' if result.head is not None else f'{result.head_fusion} of heads'}")
        gh, gw = result.map.shape
        print(f"wrote {args.output}: {what}, {gh}x{gw} patch grid, {result.extra_tokens} extra tokens")
    return 0


def _attribute_outputs(images: list[str], output: str) -> list[Path]:
    """Where each image's overlay goes: OUT itself for one image (a file), OUT/{stem}.png in a folder, or OUT with
    {stem} replaced by each image's file name stem."""
    out = Path(output)
    if "{stem}" in output:
        paths = [Path(output.replace("{stem}", Path(image).stem)) for image in images]
    elif out.is_dir():
        paths = [out / f"{Path(image).stem}.png" for image in images]
    elif len(images) == 1:
        paths = [out]
    else:
        raise _UsageError(f"{len(images)} images need -o FOLDER (existing) or a pattern with {{stem}}, got {output!r}")
    if len(set(paths)) != len(paths):
        raise _UsageError(f"two images would write the same file under -o {output!r}: their names share a stem")
    for path in paths:
        if not path.parent.is_dir():
            raise DeepvisError(f"cannot write '{path}': the folder '{path.parent}' does not exist")
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"):
            raise _UsageError(f"output {str(path)!r} needs an image extension such as .png")
    return paths


def _cmd_attribute(args) -> int:
    import numpy as np

    from deepvis.engine.attribution import attribute
    from deepvis.pixels.render import save_image

    outputs = _attribute_outputs(args.images, args.output)
    model = _model(args)
    for image, path in zip(args.images, outputs):
        result = attribute(model, image, args.unit, args.method, layer=args.layer, steps=args.steps,
                           samples=args.samples, sigma=args.sigma, mode=args.base, baseline=args.baseline,
                           integration=args.integration, seed=args.seed, batch_size=args.batch_size,
                           resize=args.resize)
        try:
            save_image(result.overlay(args.alpha), path)
            if args.npy:
                np.save(path.with_suffix(".npy"), result.map)
        except OSError as exc:
            raise DeepvisError(f"cannot write '{path}': {exc.strerror or exc}") from None
        if not args.quiet:
            settings = ", ".join(f"{k} {v}" for k, v in result.settings.items())
            print(f"wrote {path}{' (+ .npy)' if args.npy else ''}: {args.method} of {result.unit}"
                  f"{f' ({settings})' if settings else ''}")
    return 0


def _attention_ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _cmd_find_max(args) -> int:
    from deepvis.jobs.findmax import find_max
    from deepvis.store import Store

    existing = Store(args.out)
    if args.model is None and existing.exists() and args.force:
        # a re-scan keeps what made the store (its model, from the manifest's recipe, and its layers), as every
        # later command does; --model scans with another
        model = _store_model(args, args.out, force=True)
        kept = "its model" if args.layers else "its model and layers"
        if args.layers is None:
            args.layers = list(existing.read_manifest().layers)
        if not args.quiet:
            print(f"find-max: re-scanning the store with {kept} ('{model.spec}'; --model, --layers change them)",
                  file=sys.stderr, flush=True)
    else:
        model = _model(args)
    store = find_max(model, args.images, args.out, layers=args.layers, k=args.k, batch_size=args.batch_size,
                     workers=args.workers, resume=args.resume, force=args.force,
                     checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0" and not args.quiet:
        manifest = store.read_manifest()
        print(f"wrote {store.root}: top-{manifest.k} of {manifest.images} images for "
              f"{len(manifest.layers)} layers; {len(manifest.skipped)} images skipped")
    return 0


def _cmd_crops(args) -> int:
    from deepvis.jobs.crops import default_kinds, make_crops
    from deepvis.store import Store

    Store(args.store).read_manifest()  # a clear error for a folder that is not a store, before any model loads
    model = _store_model(args, args.store, force=args.force)
    kinds = tuple(args.kinds) if args.kinds else default_kinds(model)
    make_crops(model, args.store, layers=args.layers, kinds=kinds, channels=args.units, force=args.force,
               progress=not args.quiet)
    if not args.quiet:
        print(f"wrote crops ({', '.join(kinds)}) into {args.store}")
    return 0


def _cmd_optimize(args) -> int:
    from deepvis.engine.featvis import make_params, optimize_to_files
    from deepvis.jobs.optimize_store import optimize_to_store

    if bool(args.unit) == bool(args.out):
        raise _UsageError("give --out STORE with --layers (whole layers into a store), or --unit UNIT -o OUT.png")
    if args.unit and not args.output:
        raise _UsageError("--unit needs -o OUT.png")
    if args.out and not args.layers:
        raise _UsageError("--out needs --layers L... (the layers to optimize; 'deepvis layers' lists them)")
    store_only = {"--layers": args.layers, "--units": args.units, "--force": args.force or None,
                  "--batch-size": args.batch_size}
    misplaced = [flag for flag, value in store_only.items() if value is not None] if args.unit else \
        (["-o"] if args.output else [])
    if misplaced:
        raise _UsageError(f"{misplaced[0]} does not go with {'--unit' if args.unit else '--out'}: --out STORE takes "
                          "--layers/--units/--batch-size/--force, --unit takes -o")
    params = make_params(args.method, preset_name=args.preset, **_method_settings(args))
    model = _store_model(args, args.out, force=args.force) if args.out else _model(args)
    if args.unit:
        for path, result in optimize_to_files(model, args.unit, args.output, params, objective=args.objective):
            if not args.quiet:
                more = f" (+{len(result.extra_images)} copies)" if result.extra_images else ""
                print(f"wrote {path}{more}: {result.target}, best {result.best_obj:.4g} "
                      f"({result.record['meta_result']})")
        return 0
    optimize_to_store(model, args.out, args.layers, params, channels=args.units, objective=args.objective,
                      batch_size=args.batch_size or 16, force=args.force, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote optimized images of {', '.join(args.layers)} into {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    import json

    from deepvis.jobs.evaluate import evaluate_store, format_table
    from deepvis.store import Store

    Store(args.store).read_manifest()  # a clear error for a folder that is not a store, before any model loads
    model = _store_model(args, args.store)
    results = evaluate_store(model, args.store, layers=args.layers, others=args.compare or (), seed=args.seed)
    if args.json:
        print(json.dumps({layer: {k: v for k, v in e.items() if k != "units"} for layer, e in results.items()},
                         indent=1))
    elif not args.quiet:
        print(format_table(results))
        for layer, evaluation in results.items():
            share = f"{100 * evaluation['share']:.1f}% of" if evaluation["share"] is not None else "(no record of)"
            print(f"{layer}: evaluated in {evaluation['seconds']:.1f} s, {share} the optimize time "
                  f"({evaluation['optimize_seconds']:.1f} s); natural slope {evaluation['natural_slope']:.2f}")
    return 0


def _cmd_accentuate(args) -> int:
    import json

    from deepvis.engine.featvis.accentuate import accentuate
    from deepvis.pixels.render import save_image

    model = _model(args)
    result = accentuate(model, args.image, args.unit, objective=args.objective, steps=args.steps, lr=args.lr,
                        reg=args.reg, seed=args.seed)
    try:
        save_image(result.image, args.output)
        Path(args.output).with_suffix(".json").write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    except OSError as exc:
        raise DeepvisError(f"cannot write '{args.output}': {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps({k: v for k, v in result.to_json().items() if k != "record"}))
    elif not args.quiet:
        print(f"wrote {args.output}: {result.target} {result.before:.3f} -> {result.after:.3f}, RMS change "
              f"{result.distance:.4f}, path similarity {result.path_similarity:.3f}")
    return 0


def _method_settings(args) -> dict:
    """The method settings given as flags, checked against ``--method`` (and ``--preset``, ``--minimize``)."""
    from deepvis.engine.featvis import METHODS
    from deepvis.engine.featvis.methods import flag_settings

    method = METHODS[args.method]
    if args.preset and not method.presets:
        raise _UsageError(f"--preset applies to --method {' or '.join(m.name for m in METHODS.values() if m.presets)}")
    settings = {}
    for setting in flag_settings():
        value = getattr(args, setting.name)
        if value is None:
            continue
        if method.name not in setting.methods:
            raise _UsageError(f"{_flag(setting)} is a setting of the other method (--method "
                              f"{' or '.join(setting.methods)})")
        settings[setting.name] = value
    if args.minimize:
        settings["push_dir"] = -1.0
    return settings


def _flag(setting) -> str:
    """The flag of a method setting: ``--blur-radius``; a boolean that is on by default turns off: ``--no-fourier``."""
    return f"--{'no-' if setting.type == 'bool' else ''}{setting.name.replace('_', '-')}"


def _add_method_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per method setting, read from the settings dataclasses (``deepvis.optimize.methods.flag_settings``),
    in one group per method; unset flags stay ``None`` so only the settings given change the defaults."""
    from deepvis.engine.featvis import METHODS
    from deepvis.engine.featvis.methods import flag_settings

    groups = {}
    for method in METHODS.values():
        title = f"{method.name} method settings" + (" (default: the preset's)" if method.presets else "")
        groups[method.name] = parser.add_argument_group(title)
    types = {"int": int, "float": float, "float | None": float, "str": str, "dict": _json_object}
    for setting in flag_settings():
        shared = f"{' and '.join(setting.methods)} methods; " if len(setting.methods) > 1 else ""
        group = groups[setting.methods[0]]
        if setting.type == "bool":
            group.add_argument(_flag(setting), dest=setting.name, action="store_false", default=None,
                               help=setting.help + (f" ({shared.rstrip('; ')})" if shared else ""))
            continue
        kind = _positive_int if setting.type == "int" and setting.minimum == 1 else types[setting.type]
        group.add_argument(_flag(setting), dest=setting.name, type=kind, choices=setting.choices,
                           metavar=setting.metavar, help=f"{setting.help} ({shared}{setting.default})")


def _cmd_export(args) -> int:
    from deepvis.jobs.export import export_site
    from deepvis.store import Store

    store = Store(args.store)
    store.read_manifest()  # a clear error for a folder that is not a store, before any model loads
    try:  # the store's model gives the labels of label layers; a site without them is still a site
        model = _store_model(args, args.store)
    except DeepvisError as exc:
        warnings.warn(f"exporting without labels: the store's model does not load ({one_line(exc)})")
        model = None
    report = export_site(store, args.out or store.site_path, layers=args.layers, channels=args.units,
                         title=args.title, model=model, progress=not args.quiet)
    if not args.quiet:
        print(report.summary())
    return 0


def _cmd_serve(args) -> int:
    import ipaddress
    import webbrowser

    import uvicorn

    from deepvis.apps.server.app import create_app
    from deepvis.apps.server.compute import Compute
    from deepvis.apps.server.session import Toolbox

    from deepvis.store import Store

    compute = Compute()  # the one thread that runs torch: loading the model and its catalog included
    if args.store is not None:
        store = Store(Path(args.store).expanduser())
        if not store.root.is_dir():
            raise DeepvisError(f"store '{args.store}' not found: give the folder deepvis find-max --out wrote")
        model = compute.run(lambda: _store_model(args, store.root, force=args.force))
    else:
        model = compute.run(_model, args)
    toolbox = compute.run(lambda: Toolbox(model, images=args.images, store=args.store,
                                          store_images=args.images is None, layers=args.layers))
    host = args.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    url_host = host if loopback else "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{'[' + url_host + ']' if ':' in url_host else url_host}:{args.port}/"
    print(f"deepvis: {model.spec}, {len(toolbox.image_files)} images, {len(toolbox.layers)} layers; "
          f"open {url}  (Ctrl-C stops)", flush=True)
    if not loopback:
        print(f"deepvis: warning: listening on {host}, not only this machine: anyone who can reach port "
              f"{args.port} can use the toolbox and upload images", file=sys.stderr, flush=True)
    if args.open:
        webbrowser.open(url)
    uvicorn.run(create_app(toolbox, compute), host=host, port=args.port, log_level="warning")
    return 0


class _UsageError(Exception):
    pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _output_image(text: str) -> str:
    from PIL import Image

    suffix = Path(text).suffix.lower()
    if not suffix:
        raise argparse.ArgumentTypeError(f"output {text!r} has no file extension: name it e.g. OUT.png")
    Image.init()
    if Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise argparse.ArgumentTypeError(f"cannot write images of type {suffix!r} (output {text!r}): "
                                         "use .png, .jpg, .tif or .webp")
    return text


def _size(text: str) -> tuple[int, int]:
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


def _channel_range(text: str) -> range:
    first, dash, last = text.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()) or int(last or first) < int(first):
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST or N (channels), e.g. 0-63, got {text!r}")
    return range(int(first), int(last or first) + 1)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object such as \'{{"lr": 100}}\', got {text!r}')
    return value


def _numbers(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(v == v and abs(v) != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas (one per channel), got {text!r}")
    return values


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _unit(text: str):
    try:
        return parse_unit(text)
    except DeepvisError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from deepvis.engine.attribution import BASELINES, BATCH_SIZE, INTEGRATIONS
    from deepvis.engine.attribution import METHODS as ATTRIBUTION_METHODS
    from deepvis.engine.backprop import MODES, SIGNALS
    from deepvis.engine.featvis import DEFAULT_PRESET, METHODS, PRESETS
    from deepvis.pixels.render import FILTERS

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
    pre.add_argument("--input-size", type=_size, metavar="H,W", help="override the model's input size")
    pre.add_argument("--channel-order", choices=["rgb", "bgr", "gray"],
                     help="the model's input channels (Caffe models: bgr)")
    pre.add_argument("--scale", type=_positive_number, metavar="S",
                     help="the model's pixel values are S times the 0-255 values: 1 for Caffe models (raw_scale "
                          "255 on [0,1] images), 0.00392157 (1/255) for models fed [0,1] pixels; --mean and --std "
                          "are in these units (Caffe's transform_param scale, applied after the mean, is --std "
                          "1/scale)")
    pre.add_argument("--mean", metavar="M",
                     help="mean subtracted per channel, in the model's channel order and --scale units "
                          "(e.g. 104,117,123), or a mean image (.npy (C,H,W) or .binaryproto), centre-cropped to "
                          "the input size")
    pre.add_argument("--std", type=_numbers, metavar="S", help="divisor per channel (e.g. 58.4,57.1,57.4)")
    common.add_argument("--labels", metavar="FILE", help="class labels, one per line")
    common.add_argument("--max-pixels", type=_positive_int, metavar="N",
                        help="largest image decoded, in pixels (default 40000000); larger ones are refused before "
                             "decoding (the server's uploads too)")
    common.add_argument("-q", "--quiet", action="store_true", help="print less")
    common.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of errors")
    resize = argparse.ArgumentParser(add_help=False)
    resize.add_argument("--resize", choices=["crop", "stretch"], default=None,
                        help="fit images to the input size by centre crop (default) or by stretching")

    parser = _Parser(prog="deepvis", description="Deep Visualization Toolbox for PyTorch.")
    parser.add_argument("--version", action="version", version=f"deepvis {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("predict", parents=[common, resize], help="top-k class predictions for images")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--samples", action="store_true", help="also predict the bundled sample images")
    p.add_argument("--top", type=_positive_int, default=5, help="how many classes (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_cmd_predict)

    p = sub.add_parser("layers", parents=[common], help="the model's layers, shapes and flags")
    p.add_argument("--all", action="store_true", help="every layer, not only the default ones")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_cmd_layers)

    p = sub.add_parser("backprop", parents=[common, resize],
                       help="gradient / deconv / guided-backprop image of a unit with respect to the input")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--unit", required=True, type=_unit, help="layer:channel or layer:channel@y,x")
    p.add_argument("--mode", choices=MODES, default="gradient")
    p.add_argument("--filter", choices=FILTERS, default="raw")
    p.add_argument("--signal", choices=SIGNALS, default=None,
                   help="start from the unit's whole activation map (default) or a one-hot at its maximum")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", type=_output_image)
    p.set_defaults(run=_cmd_backprop)

    p = sub.add_parser("attention", parents=[common, resize],
                       help="what a token of a vision transformer attends to, or its attention rollout, over the image",
                       description="Attention probabilities recorded during one forward pass (calls of "
                       "F.scaled_dot_product_attention and nn.MultiheadAttention), drawn over the input image. "
                       "Without --rollout: one layer's attention row of the token (one head, or the heads fused). "
                       "With --rollout: Abnar & Zuidema's rollout through the layers up to --layer.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layer", metavar="L", help="an attention layer (default: the last; an unknown name lists them)")
    p.add_argument("--head", type=int, metavar="H", help="one head (default: the heads fused by --head-fusion)")
    p.add_argument("--token", type=int, default=0, metavar="T",
                   help="the token whose attention is shown (default 0: the CLS token)")
    p.add_argument("--rollout", action="store_true", help="attention rollout through the layers up to --layer")
    p.add_argument("--head-fusion", choices=["mean", "max", "min"], default="mean",
                   help="how heads are fused (default mean)")
    p.add_argument("--discard", type=_attention_ratio, default=0.0, metavar="R",
                   help="rollout: drop this fraction of each layer's lowest attentions (default 0)")
    p.add_argument("--alpha", type=_attention_ratio, default=0.5, metavar="A",
                   help="opacity of the colour map over the image (default 0.5)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", type=_output_image)
    p.set_defaults(run=_cmd_attention)

    p = sub.add_parser("attribute", parents=[common, resize],
                       help="attribution maps of a unit (Grad-CAM, Grad-CAM++, guided Grad-CAM, input x gradient, "
                            "SmoothGrad, integrated gradients) over the images",
                       description="What a unit's score (a class logit such as classifier:285, a channel's sum, a "
                       "value at @y,x or @cls) draws on in each image, drawn in jet colours over it. -o OUT: a file "
                       "for one image; an existing folder (OUT/<stem>.png) or a pattern with {stem} (e.g. "
                       "cams/{stem}-cam.png) for several. See docs/attribution.md.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--unit", required=True, type=_unit, help="layer:channel, layer:channel@y,x or layer:channel@cls")
    p.add_argument("--method", choices=ATTRIBUTION_METHODS, default="gradcam", help="default gradcam")
    p.add_argument("--layer", metavar="L", help="Grad-CAM layer (default: the last spatial layer before the unit's)")
    p.add_argument("--steps", type=_positive_int, default=32, help="integrated gradients: path points (default 32)")
    p.add_argument("--integration", choices=INTEGRATIONS, default="gausslegendre",
                   help="integrated gradients: the rule (default gausslegendre)")
    p.add_argument("--baseline", choices=BASELINES, default="black",
                   help="integrated gradients: start image (default black)")
    p.add_argument("--samples", type=_positive_int, default=32, help="SmoothGrad: noisy copies (default 32)")
    p.add_argument("--sigma", type=float, default=0.15,
                   help="SmoothGrad: noise standard deviation as a fraction of the input range (default 0.15)")
    p.add_argument("--base", choices=MODES, default="gradient", help="SmoothGrad: the base mode (default gradient)")
    p.add_argument("--seed", type=int, default=0, help="SmoothGrad noise and uniform baseline seed (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=BATCH_SIZE,
                   help=f"rows per forward pass of SmoothGrad and integrated gradients (default {BATCH_SIZE})")
    p.add_argument("--alpha", type=_attention_ratio, default=0.5, metavar="A",
                   help="opacity of the colour map over the image (default 0.5)")
    p.add_argument("--npy", action="store_true", help="also save the map (H x W float32) as OUT.npy")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="file, folder, or pattern with {stem}")
    p.set_defaults(run=_cmd_attribute)

    p = sub.add_parser("find-max", parents=[common], help="the dataset images that excite each unit most")
    p.add_argument("images", metavar="IMAGES", help="a folder of images (recursive) or a list file")
    p.add_argument("--out", required=True, metavar="STORE", help="the store directory to write")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers to scan (default: the model's default layers)")
    p.add_argument("--k", type=_positive_int, default=9, help="images kept per unit (default 9)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted scan")
    p.add_argument("--force", action="store_true", help="replace an existing store (re-scanned with its own model and layers unless --model / --layers) or interrupted scan")
    p.add_argument("--checkpoint-every", type=_positive_int, default=1000, metavar="N",
                   help="save progress every N images (default 1000)")
    p.set_defaults(run=_cmd_find_max)

    p = sub.add_parser("crops", parents=[common], help="receptive-field crops and their backward images")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers (default: all in the store)")
    p.add_argument("--kinds", nargs="+", choices=["image", "deconv", "gradient", "guided"],
                   help="pictures to make (default: image deconv for a network with max pooling, else image guided: "
                        "deconv without max-pooling switches looks the same for every image)")
    p.add_argument("--units", metavar="FIRST-LAST", type=_channel_range, help="only these channels, e.g. 0-63")
    p.add_argument("--force", action="store_true",
                   help="rewrite units already written, and use --model even where it is not the store's model")
    p.set_defaults(run=_cmd_crops)

    p = sub.add_parser("optimize", parents=[common], help="synthetic images that maximize units (activation "
                       "maximization)", description="Whole layers into a store (--out STORE --layers L...), or single "
                       "units into a picture (--unit UNIT -o OUT.png). Method 'paper' is Yosinski et al. 2015's "
                       "regularized optimization in 0-255 pixel space (Table 1 presets); 'modern' a Fourier-space, "
                       "colour-decorrelated image with random transformations; 'maco' (Fel et al. 2023) only the "
                       "Fourier phase, the magnitude fixed to your images' spectrum, crops of a larger canvas.")
    p.add_argument("--out", metavar="STORE", help="the store to write each unit's optimized images into")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers to optimize (with --out)")
    p.add_argument("--units", metavar="FIRST-LAST", type=_channel_range, help="only these channels, e.g. 0-63")
    p.add_argument("--unit", nargs="+", type=_unit, metavar="UNIT", help="single units, e.g. classifier:285 (with -o)")
    p.add_argument("-o", "--output", metavar="OUT.png", type=_output_image, help="picture for --unit")
    p.add_argument("--method", choices=list(METHODS), default="paper", help="default paper")
    p.add_argument("--preset", choices=list(PRESETS),
                   help=f"Table 1 of the paper (default {DEFAULT_PRESET}); single flags below change single settings")
    p.add_argument("--objective", choices=["unit", "channel"], default="unit",
                   help="unit: the centre position of a conv channel (or @y,x); channel: the channel's mean")
    p.add_argument("--minimize", action="store_true", help="push the unit down instead of up")
    p.add_argument("--batch-size", type=_positive_int, help="units optimized together (default 16)")
    p.add_argument("--force", action="store_true",
                   help="redo units already in the store, and use --model even where it is not the store's model")
    _add_method_flags(p)
    p.set_defaults(run=_cmd_optimize)

    p = sub.add_parser("evaluate", parents=[common], help="quality metrics of a store's optimized images",
                       description="Per unit and method: activation relative to the best dataset example, "
                       "plausibility (penultimate-feature similarity to the unit's top-k crops, against random "
                       "crops), path similarity to the top-k images, spectral slope. Writes <layer>/evaluation.json "
                       "into STORE. See docs/optimize.md.")
    p.add_argument("store", metavar="STORE", help="a find-max store (with optimized images)")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers (default: all in the store)")
    p.add_argument("--compare", nargs="+", metavar="OTHER", help="optimize-only stores of other methods to score too")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline crops (default 0)")
    p.add_argument("--json", action="store_true", help="medians and costs as JSON")
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("accentuate", parents=[common], help="change a real image just enough to excite a unit "
                       "(feature accentuation)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--unit", required=True, type=_unit, help="layer:channel or layer:channel@y,x")
    p.add_argument("--objective", choices=["unit", "channel"],
                   help="default: unit with @y,x, else the channel's mean")
    p.add_argument("--steps", type=_positive_int, default=64, help="Adam steps (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--reg", type=float, default=20.0, help="weight of the L2 pull toward the image (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and noise (default 0)")
    p.add_argument("--json", action="store_true", help="the result as JSON")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", type=_output_image)
    p.set_defaults(run=_cmd_accentuate)

    p = sub.add_parser("serve", parents=[common], help="the live toolbox in the browser")
    p.add_argument("--images", metavar="DIR|LIST",
                   help="a folder of images or a list file (default: the store's images with --store, else the "
                        "bundled samples)")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers to show (default: the model's default layers; "
                   "e.g. the bundled model's linear block outputs blocks.0 ... blocks.15)")
    p.add_argument("--store", metavar="STORE", help="precomputed per-unit images (deepvis find-max / optimize); its "
                   "model is used unless --model is given")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--open", action="store_true", help="open the toolbox in a web browser")
    p.add_argument("--force", action="store_true", help="with --store: use --model even where it is not the model "
                   "the store was made by")
    p.set_defaults(run=_cmd_serve)

    p = sub.add_parser("export", parents=[common], help="a static, shareable site of a store: one page per unit",
                       description="Write a folder of HTML, CSS, a little JS and the store's pictures (re-encoded "
                       "once) that opens from disk or any static host. Rerunning on an unchanged store changes no "
                       "file; an interrupted export resumes.")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--out", metavar="SITE", help="the site folder (default STORE/site, which deepvis serve --store "
                   "STORE links from each unit)")
    p.add_argument("--title", help="the site's title (default: deepvis · MODEL)")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers (default: all in the store)")
    p.add_argument("--units", metavar="FIRST-LAST", type=_channel_range, help="only these channels, e.g. 0-63")
    p.set_defaults(run=_cmd_export)
    return parser


def _version() -> str:
    from deepvis.core.version import __version__

    return __version__


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"deepvis: warning: {one_line(message)}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    show_warning = warnings.showwarning
    if not args.verbose:
        warnings.showwarning = _one_line_warning  # library warnings on one line, like errors
    from deepvis.pixels.images import max_pixels, set_max_pixels

    pixel_limit = max_pixels()
    try:
        if getattr(args, "max_pixels", None) is not None:
            set_max_pixels(args.max_pixels)
        return args.run(args)
    except _UsageError as exc:
        print(f"deepvis {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepvis: interrupted", file=sys.stderr)
        return 130
    except (DeepvisError, OSError) as exc:
        if args.verbose:
            raise
        print(f"deepvis: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not a user mistake: still one line, the traceback on request
        if args.verbose:
            raise
        print(f"deepvis: internal error: {type(exc).__name__}: {one_line(exc)} (rerun with -v for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = show_warning
        set_max_pixels(pixel_limit)
