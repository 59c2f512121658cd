"""Find the dataset images that excite each unit most: a streaming, resumable, optionally distributed scan.

For every channel of every chosen layer it keeps the k images with the highest activation (one entry per image
per channel, at that image's spatial maximum), exactly as a brute-force pass over all activations would, whatever
the batch size, interruptions, or number of processes (``torchrun --nproc-per-node N -m deepvis find-max ...``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from deepvis.core.errors import DeepvisError
from deepvis.core.progress import Progress
from deepvis.core.version import __version__
from deepvis.engine.probe import Probe, layer_info
from deepvis.engine.receptive_field import receptive_fields
from deepvis.engine.topk import TopK
from deepvis.models.model import Model, weights_hash
from deepvis.models.recipe import hashed
from deepvis.pixels.images import IMAGE_EXTENSIONS, find_images, load_image
from deepvis.store import LayerRecord, Manifest, SkippedImage, Store, atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FindMaxConfig:
    """Every setting of a scan, with its default (the one place for them: ``deepvis find-max`` takes its flags'
    defaults from here). ``images``: a directory (recursive) or a list file; ``out``: the store to write;
    ``layers``: None for the model's default layers."""

    images: str | Path
    out: str | Path
    layers: tuple[str, ...] | None = None
    k: int = 9
    batch_size: int = 32
    workers: int = 0
    resume: bool = False
    force: bool = False
    checkpoint_every: int = 1000
    progress: bool = True

    def __post_init__(self) -> None:
        if self.layers is not None:  # any sequence given; kept as a tuple so the config stays immutable
            object.__setattr__(self, "layers", tuple(self.layers))


@dataclass(frozen=True)
class FindMaxReport:
    """What a scan did: the store, what it holds (images listed, layers, k, unreadable images skipped), whether
    this call scanned (False: a ``resume`` of a complete store), this process's rank (only rank 0 writes), and
    the derived units a re-scan made stale and removed (``{"crops": n, "optimized": n}``)."""

    store: Store
    images: int
    layers: tuple[str, ...]
    k: int
    skipped: int
    scanned: bool = True
    rank: int = 0
    removed: dict[str, int] = field(default_factory=dict)


class _Images(Dataset):
    """Decodes and preprocesses images in DataLoader workers; a bad file becomes (index, None, reason)."""

    def __init__(self, files: list[Path], preprocessing, indices: list[int]):
        self.files, self.preprocessing, self.indices = files, preprocessing, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        try:
            return index, self.preprocessing.to_tensor(load_image(self.files[index])), None
        except DeepvisError as exc:
            return index, None, str(exc)
        except Exception as exc:  # never let one file end the scan
            return index, None, f"{type(exc).__name__}: {exc}"


def _collate(batch):
    good = [(i, x) for i, x, _ in batch if x is not None]
    skipped = [(i, reason) for i, x, reason in batch if x is None]
    if good:
        return torch.tensor([i for i, _ in good]), torch.stack([x for _, x in good]), skipped, len(batch)
    return torch.zeros(0, dtype=torch.int64), None, skipped, len(batch)


def _distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    started = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        started = True
    return dist.get_rank(), dist.get_world_size(), started


def find_max(model: Model, images: str | Path, out: str | Path, **settings: Any) -> Store:
    """Scan ``images`` into the store ``out`` (``settings``: the other fields of :class:`FindMaxConfig`, e.g.
    ``layers=``, ``k=``, ``resume=``); returns the store. :func:`run_find_max` returns the whole report."""
    return run_find_max(model, FindMaxConfig(images, out, **settings)).store


def run_find_max(model: Model, config: FindMaxConfig, manifest: Manifest | None = None) -> FindMaxReport:
    """Scan ``config.images`` (a directory, recursive, or a list file) and write each unit's top-k into the store
    ``config.out``. ``manifest``: the store's manifest when the caller has read it already (it is read once).

    Checkpoints every ``checkpoint_every`` images; ``resume=True`` continues an interrupted scan with exactly the
    result of an uninterrupted one. Unreadable images are skipped and listed in the manifest with their reason.
    """
    images, k, batch_size, workers = config.images, config.k, config.batch_size, config.workers
    resume, force, checkpoint_every = config.resume, config.force, config.checkpoint_every
    if k < 1 or batch_size < 1 or workers < 0 or checkpoint_every < 1:
        raise DeepvisError("k, batch size and checkpoint interval must be at least 1, workers at least 0")
    root, files = find_images(images)
    if not files:
        raise DeepvisError(f"no images found in '{images}' (looked for {', '.join(IMAGE_EXTENSIONS)})")
    layers = list(dict.fromkeys(config.layers or [i.name for i in model.layers() if i.default]))
    infos = {name: layer_info(model, name) for name in layers}
    store = Store(config.out)
    device = model.device
    rank, world, started = _distributed(device)
    # what the manifest and checkpoints record: a resumed scan must match it
    recorded = {"model": model.spec, "weights": weights_hash(model), "layers": layers, "k": k,
                "images": hashlib.sha256("\n".join(map(str, files)).encode()).hexdigest()[:16], "world": world}
    checkpoint = store.checkpoint(rank, world)
    if store.exists() and not force:
        manifest = manifest or store.read_manifest()
        if resume and manifest.config == recorded:  # already complete: nothing to redo
            return FindMaxReport(store, manifest.images, tuple(manifest.layers), manifest.k, len(manifest.skipped),
                                 scanned=False, rank=rank)
        raise DeepvisError(f"'{store.root}' already holds a store: choose another --out, or --force to replace it")
    if checkpoint.exists() and force:
        checkpoint.unlink()
    if checkpoint.exists() and not resume:
        raise DeepvisError(f"'{store.root}' holds an interrupted scan: add --resume to continue it (or --force to "
                           "start again)")
    mine = list(range(rank, len(files), world))
    state = _load_checkpoint(checkpoint, recorded) if checkpoint.exists() else None
    if state is not None:
        start = int(state["next"])
        tops = {name: TopK.from_state(state["topk"][name], device) for name in layers}
        skipped = [(int(i), str(r)) for i, r in state["skipped"]]
    else:
        start = 0
        tops = {name: TopK.empty(infos[name].channels, k, device) for name in layers}
        skipped = []
    loader = DataLoader(_Images(files, model.preprocessing, mine[start:]), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate, shuffle=False)
    bar = Progress(len(mine), f"find-max{f' [rank {rank}]' if world > 1 else ''}", enabled=config.progress,
                   initial=start)
    done, since_checkpoint = start, 0
    started_at = time.time()
    try:
        for indices, x, bad, count in loader:
            skipped.extend(bad)
            if x is not None:
                with torch.no_grad(), Probe(model, layers, stop_early=True) as probe:
                    probe.run(x.to(device))
                for name in layers:
                    tops[name] = tops[name].update(probe[name], indices)
            done += count
            since_checkpoint += count
            bar.update(count)
            if since_checkpoint >= checkpoint_every and done < len(mine):
                _save_checkpoint(checkpoint, recorded, done, tops, skipped)
                since_checkpoint = 0
    except KeyboardInterrupt:
        _save_checkpoint(checkpoint, recorded, done, tops, skipped)
        bar.close()
        log.warning("find-max: interrupted after %d of %d images, progress saved; continue with --resume", done,
                    len(mine))
        raise
    bar.close()
    tops, skipped = _gather(tops, skipped, world)
    if len({int(i) for i, _ in skipped}) >= len(files):
        checkpoint.unlink(missing_ok=True)
        first = min(skipped)
        raise DeepvisError(f"none of the {len(files)} images of '{images}' could be read (e.g. '{files[first[0]]}': "
                           f"{first[1]}): no store written")
    removed = {}
    if rank == 0:
        removed = _write_results(store, model, root, files, layers, infos, tops, skipped, k, recorded, batch_size,
                                 world, started_at, manifest)
    checkpoint.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
        if started:
            dist.destroy_process_group()
    return FindMaxReport(store, len(files), tuple(layers), k, len(skipped), rank=rank, removed=removed)


def _save_checkpoint(path: Path, config: dict, done: int, tops: dict[str, TopK], skipped) -> None:
    buffer = io.BytesIO()
    torch.save({"config": config, "next": done, "topk": {n: t.state() for n, t in tops.items()},
                "skipped": [[int(i), str(r)] for i, r in skipped]}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path, config: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DeepvisError(f"cannot read the checkpoint '{path}': {exc}; delete it to start again") from None
    if state.get("config") != config:
        changed = [key for key in config if state.get("config", {}).get(key) != config[key]]
        raise DeepvisError(f"the interrupted scan in '{path.parent}' used other settings ({', '.join(changed)}): "
                           "resume with the same ones, or use --force to start again")
    return state


def _gather(tops: dict[str, TopK], skipped, world: int):
    if world <= 1:
        return tops, skipped
    merged = {}
    for name, top in tops.items():
        parts = []
        for tensor in (top.values, top.images, top.ys, top.xs):
            gathered = [torch.empty_like(tensor) for _ in range(world)]
            dist.all_gather(gathered, tensor.contiguous())
            parts.append(gathered)
        result = TopK(parts[0][0], parts[1][0], parts[2][0], parts[3][0])
        for r in range(1, world):
            result = result.merge(TopK(parts[0][r], parts[1][r], parts[2][r], parts[3][r]))
        merged[name] = result
    all_skipped = [None] * world
    dist.all_gather_object(all_skipped, skipped)
    return merged, sorted({tuple(s) for part in all_skipped for s in part})


def _write_results(store: Store, model: Model, root: Path, files: list[Path], layers, infos, tops, skipped, k,
                   config, batch_size, world, started_at, previous: Manifest | None) -> dict[str, int]:
    """Write the top-k, image list and manifest; remove what the new scan made stale (counts returned)."""
    fields = receptive_fields(model, layers)
    for name in layers:
        top = tops[name].to("cpu")
        store.write_topk(name, top.values.numpy(), top.images.numpy(), top.ys.numpy(), top.xs.numpy())
    relative = []
    for path in files:
        try:
            relative.append(str(path.relative_to(root)))
        except ValueError:
            relative.append(str(path))
    try:
        previous = previous or (store.read_manifest() if store.exists() else None)
    except DeepvisError:
        previous = None
    store.write_image_list(relative)
    manifest = Manifest(
        model=model.spec,
        weights_sha256=config["weights"],
        preprocessing=model.preprocessing.to_json(),
        image_root=str(root),
        images=len(files),
        k=k,
        layers={name: LayerRecord(infos[name].channels, list(infos[name].shape),
                                  fields[name].to_json() if fields[name] else None,
                                  layout=infos[name].layout.to_json()) for name in layers},
        skipped=[SkippedImage(int(i), relative[int(i)], reason) for i, reason in sorted(skipped)],
        config=config,
        provenance={"command": sys.argv, "deepvis": __version__, "torch": torch.__version__,
                    "batch_size": batch_size, "processes": world,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started_at)),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
        recipe=hashed(model.recipe) if model.recipe else
        {"unreloadable": f"the model {model.spec} was made in Python, not loaded from a spec"},
    )
    store.write_manifest(manifest)
    return store.invalidate(manifest, previous)
