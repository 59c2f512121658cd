"""Quality you can measure for feature visualizations (``deepvis evaluate``), per unit and per method, against the
unit's own top-k dataset examples from find-max:

- ``activation``: the unit's channel maximum (over positions, as find-max measures it) on the image, relative to
  the best dataset example's (``topk.npz`` rank 0);
- ``plausibility``: cosine similarity, in the model's penultimate features (the input of the classifier), between
  the image's crop at the unit (the receptive field at the unit's position, resized exactly as the top-k crops
  are) and the unit's top-k dataset crops (Fel et al. 2023), the features centred on the mean of natural crops
  (a separate set of random crops): post-ReLU features share a large positive component, so the raw cosine
  mostly says "a natural crop" (any two random crops score ~0.3); centred, it says whether the image shares
  what sets the unit's examples apart. ``plausibility_raw`` is the uncentred cosine (the paper's).
  ``random_crops`` is the baseline: the same scores for random crops of the same size from the dataset images,
  leaving out, per unit, those from the unit's own top-k images;
- ``path``: Spearman rank correlation of per-layer activations (the mean of each channel, over the model's default
  conv layers) between the image and the mean of the unit's top-k images, averaged over layers (Geirhos et al.
  2024: a visualization may take another path through the network than natural images);
- ``slope``: the log-log slope of the image's radially averaged power spectrum; ``slope_gap`` its distance from the
  natural images' median (``natural_slope``, of the dataset images).

The dataset examples themselves are scored as the ``dataset`` method (leave-one-out among the top-k). Deterministic
given ``seed`` (which picks the random crops)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deepvis.core.boxes import crop_box
from deepvis.jobs.fields import effective_field, unit_box
from deepvis.jobs.inputs import StoreInputs
from deepvis.core.errors import DeepvisError
from deepvis.pixels.images import load_image
from deepvis.models.model import Model
from deepvis.engine.receptive_field import field_from_json
from deepvis.engine.featvis.quality import (Features, leave_one_out, path_similarity, spearman, spectral_slope)
from deepvis.store import Store

METRICS = ("activation", "plausibility", "plausibility_raw", "path", "slope", "slope_gap")


def evaluate_layer(model: Model, store: Store, layer: str, images: dict[str, dict[int, np.ndarray]],
                   seed: int = 0, baseline: int = 32) -> dict:
    """Score ``images`` (method -> channel -> (H, W, 3) image in [0, 1], or a list of them: a unit's copies, each
    scored and the scores averaged) of ``layer`` against the store's top-k;
    returns the evaluation (per unit, per method, and the medians). ``baseline`` random crops score the baseline,
    as many others give the natural crops' mean feature that plausibility is centred on."""
    started = time.perf_counter()
    manifest = store.read_manifest()
    if layer not in manifest.layers:
        raise DeepvisError(f"layer '{layer}' is not in the store (it has {', '.join(manifest.layers)})")
    top = store.read_topk(layer)
    root = Path(manifest.image_root)
    files = [root / p for p in store.read_image_list()]
    inputs = StoreInputs(model, files)
    size = tuple(model.preprocessing.input_size)
    shape = manifest.layers[layer].shape
    field = field_from_json(manifest.layers[layer].receptive_field)
    effective = effective_field(model, inputs, layer, field, shape)
    centre = (shape[1] // 2, shape[2] // 2) if len(shape) == 3 else (-1, -1)
    features = Features(model, layer)
    rng = np.random.default_rng(seed)

    def resized(picture: np.ndarray) -> np.ndarray:
        if picture.shape[:2] == size:
            return picture
        return np.asarray(Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8)).resize(size[::-1]),
                          np.float32) / 255.0

    # random crops of random images at random positions, the layer's box: the first half gives the natural mean
    # feature, the second half is the baseline (each crop with its image, left out for units whose top-k hold it)
    random_crops, crop_images = [], []
    for _ in range(2 * baseline if files else 0):
        index = int(rng.integers(len(files)))
        try:
            pixels = inputs.get(index)[1]
        except DeepvisError:
            continue
        y, x = (int(rng.integers(shape[1])), int(rng.integers(shape[2]))) if len(shape) == 3 else (-1, -1)
        random_crops.append(resized(crop_box(pixels, unit_box(field, y, x, size, effective))))
        crop_images.append(index)
    half = len(random_crops) // 2
    natural = features(random_crops)["features"] if random_crops else None
    mean = natural[:half].mean(0) if half else None

    def unit_vectors(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features normalized, and centred on the natural mean then normalized."""
        centred = raw - mean if mean is not None else raw
        return F.normalize(raw, dim=1), F.normalize(centred, dim=1)

    base = unit_vectors(natural[half:]) if half else None

    channels = sorted({c for per in images.values() for c in per})
    slopes_natural: list[float] = []
    units: dict[str, dict] = {}
    for channel in channels:
        ranks = [r for r in range(top["images"].shape[1]) if top["images"][channel, r] >= 0]
        if not ranks:
            continue
        loaded = [inputs.get(int(top["images"][channel, r]))[1] for r in ranks]
        positions = [(int(top["y"][channel, r]), int(top["x"][channel, r])) for r in ranks]
        crops = [resized(crop_box(p, unit_box(field, y, x, size, effective))) for p, (y, x) in zip(loaded, positions)]
        full = features(loaded)
        crop_raw, crop_centred = unit_vectors(features(crops)["features"])
        best = float(top["values"][channel, 0]) or 1e-12
        reference_path = [p.mean(0) for p in full["path"]]
        slopes = [spectral_slope(p) for p in loaded]
        slopes_natural += slopes
        unit: dict[str, dict] = {}
        # the dataset examples: leave-one-out among the top-k
        k = len(ranks)
        unit["dataset"] = {
            "activation": float(np.mean(top["values"][channel, ranks] / best)),
            "plausibility": leave_one_out(crop_centred), "plausibility_raw": leave_one_out(crop_raw),
            "path": float(np.mean([np.mean([spearman(layer_acts[i].numpy(),
                                                      ((layer_acts.sum(0) - layer_acts[i]) / max(k - 1, 1)).numpy())
                                            for layer_acts in full["path"]]) for i in range(k)])) if k > 1 else 1.0,
            "slope": float(np.median(slopes))}
        own_images = {int(top["images"][channel, r]) for r in ranks}
        unrelated = [i for i, image in enumerate(crop_images[half:]) if image not in own_images]
        if base is not None and unrelated:
            unit["random_crops"] = {"plausibility": float((base[1][unrelated] @ crop_centred.T).mean()),
                                    "plausibility_raw": float((base[0][unrelated] @ crop_raw.T).mean())}
        for method, per in images.items():
            if channel not in per:
                continue
            pictures = [resized(p) for p in (per[channel] if isinstance(per[channel], list) else [per[channel]])]
            y, x = centre
            crops_of = [resized(crop_box(p, unit_box(field, y, x, size, effective))) for p in pictures]
            whole = features(pictures + crops_of)
            own_raw, own_centred = unit_vectors(whole["features"][len(pictures):])
            plausibility = (own_centred @ crop_centred.T).mean(1)
            # several images of a unit (its copies): each scored, the scores averaged -- one image's plausibility
            # is a noisy sample of the method's (docs/optimize.md: seed against seed of the same method)
            unit[method] = {"activation": float(whole["channel_max"][:len(pictures), channel].mean()) / best,
                            "plausibility": float(plausibility.mean()),
                            "plausibility_raw": float((own_raw @ crop_raw.T).mean()),
                            "path": float(np.mean([path_similarity([p[:len(pictures)] for p in whole["path"]], i,
                                                                    reference_path) for i in range(len(pictures))])),
                            "slope": float(np.mean([spectral_slope(p) for p in pictures]))}
            if len(pictures) > 1:
                unit[method].update(images=len(pictures), plausibility_sd=float(plausibility.std(unbiased=False)))
        units[str(channel)] = unit
    natural_slope = float(np.median(slopes_natural)) if slopes_natural else -2.0
    for unit in units.values():
        for scores in unit.values():
            if "slope" in scores:
                scores["slope_gap"] = abs(scores["slope"] - natural_slope)
    medians = {}
    for method in list(images) + ["dataset", "random_crops"]:
        medians[method] = {m: statistics.median(u[method][m] for u in units.values() if method in u)
                           for m in METRICS if any(method in u and m in u[method] for u in units.values())}
    return {"layer": layer, "seed": seed, "penultimate": features.penultimate, "path_layers": features.path,
            "natural_slope": natural_slope, "baseline_crops": len(random_crops) - half, "units": units,
            "median": medians, "forwards": features.forwards, "seconds": round(time.perf_counter() - started, 3)}


def optimized_images(store: Store, layer: str, channels: Sequence[int] | None = None
                     ) -> tuple[str | None, dict[int, list[np.ndarray]], float]:
    """The store's optimized images of ``layer`` (the method its records name), by channel: each unit's image and
    its copies (``--copies``); and the optimize seconds they cost (from the records)."""
    method, found, seconds = None, {}, 0.0
    folder = store.layer_dir(layer)
    wanted = channels if channels is not None else sorted(
        int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []
    for channel in wanted:
        record = store.read_optimized_record(layer, channel)
        path = store.optimized_file(layer, channel, "input")
        if not path.is_file():
            path = store.optimized_file(layer, channel)
        if record is None or not path.is_file():
            continue
        method = method or record.get("method")
        found[channel] = [np.asarray(load_image(path), np.float32) / 255.0]
        copy = 1
        while store.optimized_file(layer, channel, copy).is_file():
            found[channel].append(np.asarray(load_image(store.optimized_file(layer, channel, copy)), np.float32) / 255)
            copy += 1
        seconds += float(record.get("seconds_per_batch", 0.0)) / max(int(record.get("batch_size", 1)), 1)
    return method, found, seconds


@dataclass(frozen=True)
class EvaluateConfig:
    """Every setting of evaluating a store, with its default (the one place for them: ``deepvis evaluate`` takes
    its flags' defaults from here). ``layers``: None for all of the store's; ``others``: optimize-only stores of the
    same model (each one method) scored too; ``seed`` picks the random baseline crops; ``write``: each layer's
    ``evaluation.json`` into the store."""

    store: str | Path
    layers: tuple[str, ...] | None = None
    others: tuple[str | Path, ...] = ()
    seed: int = 0
    write: bool = True

    def __post_init__(self) -> None:  # any sequences given; kept as tuples so the config stays immutable
        object.__setattr__(self, "layers", None if self.layers is None else tuple(self.layers))
        object.__setattr__(self, "others", tuple(self.others))


@dataclass(frozen=True)
class EvaluateReport:
    """What an evaluation found: the store and each layer's evaluation (per unit, per method, the medians, the
    seconds it took and its ``share`` of the optimize time it evaluates)."""

    store: Store
    evaluations: dict[str, dict]

    def table(self) -> str:
        """The medians as a Markdown table (:func:`format_table`)."""
        return format_table(self.evaluations)


def evaluate_store(model: Model, store: str | Path, layers: Sequence[str] | None = None, *,
                   extra: dict[str, dict[str, dict[int, np.ndarray]]] | None = None, **settings: Any
                   ) -> dict[str, dict]:
    """Evaluate ``store`` (``settings``: the other fields of :class:`EvaluateConfig`, e.g. ``others=``,
    ``seed=``); returns each layer's evaluation (:func:`run_evaluate`)."""
    return run_evaluate(model, EvaluateConfig(store, layers, **settings), extra).evaluations


def run_evaluate(model: Model, config: EvaluateConfig,
                 extra: dict[str, dict[str, dict[int, np.ndarray]]] | None = None) -> EvaluateReport:
    """Evaluate the optimized images of the store (and of the ``others``: optimize-only stores of the same model,
    each one method, and ``extra``: method -> layer -> channel -> image in memory, such as accentuated images)
    against the store's top-k, per layer; writes each layer's ``evaluation.json`` into the store (``write``).
    Each evaluation records its cost beside the optimize time it evaluates (``share``)."""
    store, others = Store(config.store), config.others
    manifest = store.read_manifest()
    layers = list(config.layers or manifest.layers)
    results = {}
    for layer in layers:
        images, optimize_seconds = {}, 0.0
        for source in [store, *map(Store, others)]:
            method, found, seconds = optimized_images(source, layer)
            if found:
                images[method or source.root.name] = found
                optimize_seconds += seconds
        for method, per_layer in (extra or {}).items():
            if per_layer.get(layer):
                images[method] = per_layer[layer]
        if not images:
            raise DeepvisError(f"no optimized images of layer '{layer}' in {store.root}"
                               f"{' or the other stores' if others else ''}: run deepvis optimize --out first")
        evaluation = evaluate_layer(model, store, layer, images, seed=config.seed)
        evaluation["optimize_seconds"] = round(optimize_seconds, 3)
        evaluation["share"] = round(evaluation["seconds"] / optimize_seconds, 4) if optimize_seconds else None
        if config.write:
            store.write_evaluation(layer, evaluation)
        results[layer] = evaluation
    return EvaluateReport(store, results)


def format_table(evaluations: dict[str, dict]) -> str:
    """The medians as a Markdown table: one row per layer and method."""
    lines = ["| layer | method | activation | plausibility | plausibility (raw) | path | slope | slope gap |",
             "|---|---|---|---|---|---|---|---|"]
    for layer, evaluation in evaluations.items():
        for method, scores in evaluation["median"].items():
            cells = [f"{scores[m]:.3f}" if m in scores else "" for m in METRICS]
            lines.append(f"| {layer} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
