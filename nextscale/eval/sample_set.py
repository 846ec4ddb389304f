"""Sample sets for FID / IS / precision / recall: `per_class` PNGs of each class, resumable, split across processes,
packed into the npz that OpenAI's guided-diffusion evaluator reads.

    out/settings.json                          what produced the images; a resumed run must match it
    out/class0207_seed0000012_row0005.png …    one PNG per image
    out.npz                                    arr_0: uint8 (N, H, W, 3), the PNGs in sorted-name order
                                               (next to the folder, as the official create_npz_from_sample_folder)

Seeding and resuming. The N images form one class-major list (each class's images consecutive, classes in the order
given), cut into fixed batches: batch b holds images b·bs … (b+1)·bs − 1 and is made by one call
`generate(its labels, seed=batch_seed(seed, b))`. A batch is the unit of work: its PNGs are written one by one through a
temporary file and `os.replace`, and a batch whose PNGs all exist is skipped. An image therefore depends on the base
seed, the batch size and its place in the list, never on what ran before or on how many processes share the work, so
an interrupted run resumes to exactly the images an uninterrupted run writes (on the same hardware and software: the
floating-point kernels must match). The batch size is part of the recipe; `settings.json` records it and a resumed run
with another batch size (or model, settings, classes, seed) is refused. A PNG's name gives its class, its batch's seed
and its row in the batch; `regenerate_batch` remakes any batch alone. With W processes (torchrun), rank r takes
batches r, r+W, r+2W, …

Letters: N images, bs batch size, W processes.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from nextscale import __version__
from nextscale.errors import UsageError
from nextscale.eval.classifier import load_classifier
from nextscale.eval.config import MAX_BATCH_SIZE, SampleSetConfig, parse_classes  # noqa: F401 (re-exported)
from nextscale.eval.image_sets import CLASS_IN_NAME
from nextscale.eval.rejection import classifier_scorer, rejection_sample
from nextscale.images import to_pil
from nextscale.pipeline import Pipeline
from nextscale.progress import progress_bar
from nextscale.sampling import SamplingSettings

SETTINGS_FILE = "settings.json"
MAX_BATCHES = 1_000_000  # batch seeds are seed·MAX_BATCHES + b, distinct for every (seed, b)
# settings.json fields that do not change the images, so a resumed run may differ in them
_INFORMATIONAL = ("library_version", "naming", "seeding")


@dataclass(frozen=True)
class Batch:
    index: int  # b: images b·bs … of the class-major list
    seed: int  # the generator seed of the whole batch
    labels: tuple[int, ...]
    names: tuple[str, ...]  # the PNG file names, one per label


@dataclass
class SampleSetStatus:
    total: int  # N, images in the whole set
    existing: int  # images of this rank's batches found complete at the start
    written: int  # images this call wrote
    remaining: int  # images of this rank's batches still missing (max_batches stopped early)


def batch_seed(seed: int, batch_index: int) -> int:
    return seed * MAX_BATCHES + batch_index


def image_name(label: int, seed: int, row: int) -> str:
    return f"class{label:04d}_seed{seed:07d}_row{row:04d}.png"


def plan_batches(classes: tuple[int, ...], per_class: int, batch_size: int, seed: int) -> list[Batch]:
    """The whole set as fixed batches: batch b = images b·bs … of the class-major list."""
    labels = [c for c in classes for _ in range(per_class)]
    num_batches = -(-len(labels) // batch_size)
    if num_batches > MAX_BATCHES:
        raise UsageError(f"{num_batches} batches; at most {MAX_BATCHES} (raise the batch size)")
    batches = []
    for b in range(num_batches):
        chunk = tuple(labels[b * batch_size : (b + 1) * batch_size])
        s = batch_seed(seed, b)
        batches.append(Batch(b, s, chunk, tuple(image_name(c, s, row) for row, c in enumerate(chunk))))
    return batches


def rank_batches(batches: list[Batch], rank: int, world_size: int) -> list[Batch]:
    """Rank r's share: batches r, r + W, r + 2W, …"""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return batches[rank::world_size]


def resolve_classes(config: SampleSetConfig, num_classes: int) -> tuple[int, ...]:
    classes = tuple(range(num_classes)) if config.classes is None else config.classes
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UsageError(f"class {bad[0]} is outside [0, {num_classes})")
    return classes


def settings_record(pipeline: Pipeline, config: SampleSetConfig) -> dict:
    """What settings.json holds: everything that decides the images, plus the library version."""
    classes = resolve_classes(config, pipeline.num_classes)
    return {
        "model": pipeline.source,
        "image_size": pipeline.image_size,
        "num_classes": pipeline.num_classes,
        "dtype": str(pipeline.dtype).removeprefix("torch."),
        "quantize": pipeline.quantize,  # int8 linears draw other images than fp32 (absent from older sets: None)
        "sampling": asdict(config.settings),
        "per_class": config.per_class,
        "classes": list(classes),
        "num_images": len(classes) * config.per_class,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "rejection": config.rejection,
        "seeding": "batch b = images b*batch_size… of the class-major list, generated with seed*1000000 + b",
        "naming": "class{class:04d}_seed{batch seed:07d}_row{row in batch:04d}.png",
        "library_version": __version__,
    }


def write_or_check_settings(out_dir: Path, record: dict, rank: int = 0) -> None:
    """Write settings.json (atomically) for a new set; for an existing one, refuse a run that would differ."""
    file = out_dir / SETTINGS_FILE
    if file.is_file():
        old = json.loads(file.read_text())
        differ = [k for k in record if k not in _INFORMATIONAL and old.get(k) != record[k]]
        if differ:
            shown = ", ".join(f"{k}: {_short(old.get(k))} → {_short(record[k])}" for k in differ)
            raise UsageError(f"{out_dir} holds a sample set made with other settings ({shown}); use another --out")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = out_dir / f".{SETTINGS_FILE}.{rank}.tmp"
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(temporary, file)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "…"


def is_complete(out_dir: Path, batch: Batch) -> bool:
    return all((out_dir / name).is_file() for name in batch.names)


def save_png(image: Image.Image, path: Path, rank: int = 0) -> None:
    """Write through a temporary sibling and rename, so a PNG under its final name is always whole."""
    temporary = path.with_name(f".{path.name}.{rank}.tmp")
    image.save(temporary, format="PNG")
    os.replace(temporary, path)


def regenerate_batch(pipeline: Pipeline, batch: Batch, settings: SamplingSettings, rejection: int = 1) -> torch.Tensor:
    """One batch's images, (bs, 3, H, W) in [0, 1]: the same call a sample-set run makes. With `rejection` > 1,
    each image is the best of that many candidates by the Fashion-MNIST evaluation classifier (the paper's "-re")."""
    if rejection == 1:
        return pipeline.generate(list(batch.labels), seed=batch.seed, settings=settings)
    classifier = load_classifier(device=pipeline.device)
    if pipeline.num_classes != classifier.config.num_classes:
        raise UsageError(
            f"rejection sampling scores with the Fashion-MNIST classifier ({classifier.config.num_classes} classes); "
            f"this model has {pipeline.num_classes}"
        )
    draw = lambda labels, seed: pipeline.generate(labels, seed=seed, settings=settings)  # noqa: E731
    result = rejection_sample(
        draw, batch.labels, classifier_scorer(classifier), candidates=rejection, seed=batch.seed,
        batch_size=len(batch.labels), progress=False,
    )  # fmt: skip
    return result.images_N3HW


def generate_sample_set(
    pipeline: Pipeline,
    config: SampleSetConfig,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    max_batches: int | None = None,
) -> SampleSetStatus:
    """Write this rank's missing batches of the set (all of them for a single process). `max_batches` stops after
    that many batches (time-boxed jobs; rerun to continue). Needs no process group: ranks only share the folder."""
    out_dir = Path(config.out_dir)
    write_or_check_settings(out_dir, settings_record(pipeline, config), rank)
    batches = plan_batches(
        resolve_classes(config, pipeline.num_classes), config.per_class, config.batch_size, config.seed
    )
    mine = rank_batches(batches, rank, world_size)
    todo = [batch for batch in mine if not is_complete(out_dir, batch)]
    existing = sum(len(batch.names) for batch in mine) - sum(len(batch.names) for batch in todo)
    run = todo if max_batches is None else todo[:max_batches]
    bar = tqdm(
        total=sum(len(batch.names) for batch in run),
        unit="img",
        desc=f"sampling (rank 0 of {world_size})" if world_size > 1 else "sampling",
        disable=not (progress and rank == 0),
        dynamic_ncols=True,
    )
    written = 0
    with bar:
        for batch in run:
            images = to_pil(regenerate_batch(pipeline, batch, config.settings, config.rejection))
            for name, image in zip(batch.names, images):
                save_png(image, out_dir / name, rank)
            written += len(batch.names)
            bar.update(len(batch.names))
    total = sum(len(batch.names) for batch in batches)
    remaining = sum(len(batch.names) for batch in todo) - written
    return SampleSetStatus(total=total, existing=existing, written=written, remaining=remaining)


def expected_names(pipeline: Pipeline, config: SampleSetConfig) -> list[str]:
    classes = resolve_classes(config, pipeline.num_classes)
    return [
        name
        for batch in plan_batches(classes, config.per_class, config.batch_size, config.seed)
        for name in batch.names
    ]


def pack_npz(out_dir: str | os.PathLike, names: list[str], image_size: int, progress: bool = True) -> Path:
    """Pack the PNGs `names` (exactly these, no more and no fewer in the folder) in sorted order into `<out_dir>.npz`:
    arr_0, uint8 (N, H, W, 3), and labels, int64 (N,): the class in each file name (what eval-samples reads for class
    accuracy; the OpenAI evaluator reads arr_0 only). Streams image by image, so 50,000 images need no 10 GB of
    memory. Removes temporary files left by interrupted runs."""
    out_dir = Path(out_dir)
    found = {path.name for path in out_dir.glob("*.png")}
    wanted = set(names)
    if len(wanted) != len(names):
        raise ValueError("the expected file names repeat")
    missing, extra = sorted(wanted - found), sorted(found - wanted)
    if missing or extra:
        raise UsageError(
            f"{out_dir} has {len(found & wanted)} of {len(wanted)} images"
            + (f"; missing {len(missing)}, e.g. {missing[0]} (rerun to finish)" if missing else "")
            + (f"; {len(extra)} PNGs that do not belong, e.g. {extra[0]}" if extra else "")
        )
    for stale in out_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    path = out_dir.parent / f"{out_dir.name}.npz"
    temporary = path.with_name(f".{path.name}.tmp")
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
        "fortran_order": False,
        "shape": (len(names), image_size, image_size, 3),
    }
    try:
        with (
            zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
            archive.open("arr_0.npy", "w", force_zip64=True) as member,
        ):
            np.lib.format.write_array_header_1_0(member, header)
            for name in tqdm(sorted(names), unit="img", desc="packing npz", disable=not progress, dynamic_ncols=True):
                member.write(_read_png(out_dir / name, image_size).tobytes())
        labels_N = np.array([CLASS_IN_NAME.match(name)[1] for name in sorted(names)], dtype=np.int64)
        with (
            zipfile.ZipFile(temporary, "a", zipfile.ZIP_STORED, allowZip64=True) as archive,
            archive.open("labels.npy", "w") as member,
        ):
            np.save(member, labels_N)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _read_png(path: Path, image_size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            pixels_HW3 = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise UsageError(f"{path} is not a readable image ({err}); delete it and rerun to make it again") from None
    if pixels_HW3.shape != (image_size, image_size, 3):
        raise UsageError(f"{path} is {pixels_HW3.shape[1]}×{pixels_HW3.shape[0]}, not {image_size}×{image_size}")
    return pixels_HW3


def class_balanced_npz(
    pipe: Pipeline,
    settings: SamplingSettings,
    per_class: int,
    batch_size: int,
    seed: int,
    path: Path,
    progress: bool = True,
    description: str = "sampling",
) -> Path:
    """`per_class` samples of every class (class-major) into an .npz (`arr_0`, `labels`) in memory, then written at
    once (kept if already there): the quick form of a sample set for evaluations that need no PNGs. Batch b is drawn
    with seed `seed · 1,000,003 + b`."""
    if path.is_file():
        return path
    labels = [c for c in range(pipe.num_classes) for _ in range(per_class)]
    chunks = []
    bar = progress_bar(total=len(labels), description=description, unit="img", enabled=progress)
    for batch, begin in enumerate(range(0, len(labels), batch_size)):
        batch_labels = labels[begin : begin + batch_size]
        images = pipe.generate(batch_labels, seed=seed * 1_000_003 + batch, settings=settings)
        chunks.append(images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        bar.update(len(batch_labels))
    bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, arr_0=np.concatenate(chunks), labels=np.array(labels, dtype=np.int64))
    partial.replace(path)
    return path
