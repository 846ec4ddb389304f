"""Sample sets: every image planned once, a resumed or split run writes exactly the uninterrupted run's images, the
npz is the evaluator's (N, H, W, 3) uint8 in sorted-name order, and mismatched reruns are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import debug_pair
from PIL import Image

from nextscale.eval.sample_set import (
    SampleSetConfig,
    expected_names,
    generate_sample_set,
    pack_npz,
    parse_classes,
    plan_batches,
    rank_batches,
)
from nextscale.pipeline import Pipeline

CLASSES, PER_CLASS, BATCH = (0, 3, 5), 3, 2  # 9 images in 5 batches, the last one short
N = len(CLASSES) * PER_CLASS


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    tokenizer, model = debug_pair(seed=7)
    return Pipeline(tokenizer, model, source="debug pair, seed 7")


def _config(out_dir: Path, **overrides) -> SampleSetConfig:
    return SampleSetConfig(**{"out_dir": str(out_dir), "per_class": PER_CLASS, "classes": CLASSES, "batch_size": BATCH,
                              "seed": 3, **overrides})  # fmt: skip


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def uninterrupted(pipe, tmp_path_factory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("sets") / "whole"
    status = generate_sample_set(pipe, _config(folder), progress=False)
    assert (status.total, status.existing, status.written, status.remaining) == (N, 0, N, 0)
    return _pixels(folder)


def test_plan_and_rank_split_cover_every_image_once():
    batches = plan_batches(tuple(range(5)), per_class=3, batch_size=4, seed=1)
    names = [name for batch in batches for name in batch.names]
    labels = [label for batch in batches for label in batch.labels]
    assert len(batches) == 4 and len(set(names)) == len(names) == 15
    assert labels == [c for c in range(5) for _ in range(3)]  # class-major
    assert len({batch.seed for batch in batches}) == 4
    assert names[4] == "class0001_seed1000001_row0000.png"  # class 1, batch 1 of base seed 1, first row
    for world in (2, 3):
        shares = [rank_batches(batches, rank, world) for rank in range(world)]
        indices = sorted(batch.index for share in shares for batch in share)
        assert indices == list(range(len(batches)))
    with pytest.raises(ValueError, match="outside a world"):
        rank_batches(batches, 2, 2)


def test_parse_classes():
    assert parse_classes("0-3,7, 9-10") == (0, 1, 2, 3, 7, 9, 10)
    assert parse_classes("5") == (5,)
    for bad in ("5-3", "a", "1,,2", ""):
        with pytest.raises(ValueError, match="bad class list"):
            parse_classes(bad)


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(pipe, tmp_path, uninterrupted):
    folder = tmp_path / "resumed"
    config = _config(folder)
    first = generate_sample_set(pipe, config, progress=False, max_batches=3)  # "killed" after three batches
    assert (first.written, first.remaining) == (6, 3)
    (folder / "class0000_seed3000000_row0001.png").unlink()  # batch 0 now incomplete
    partial = folder / ".class0005_seed3000004_row0000.png.0.tmp"  # a PNG cut off mid-write in batch 4
    partial.write_bytes(b"\x89PNG\r\n\x1a\n trunc")
    second = generate_sample_set(pipe, config, progress=False)
    assert (second.existing, second.written, second.remaining) == (4, 5, 0)  # batches 1, 2 kept; 0, 3, 4 made
    resumed = _pixels(folder)
    assert sorted(resumed) == sorted(uninterrupted) == sorted(expected_names(pipe, config))
    for name, pixels in uninterrupted.items():
        assert np.array_equal(resumed[name], pixels), name
    assert len({pixels.tobytes() for pixels in resumed.values()}) == N  # N different images
    npz = pack_npz(folder, expected_names(pipe, config), pipe.image_size, progress=False)
    assert npz == tmp_path / "resumed.npz" and not partial.exists()
    with np.load(npz) as packed:
        assert list(packed.keys()) == ["arr_0", "labels"]
        array, labels = packed["arr_0"], packed["labels"]
    assert labels.tolist() == [int(name[5:9]) for name in sorted(uninterrupted)]  # class ids from the file names
    assert array.shape == (N, 8, 8, 3) and array.dtype == np.uint8
    assert np.array_equal(array, np.stack([uninterrupted[name] for name in sorted(uninterrupted)]))


def test_two_ranks_write_the_single_process_images(pipe, tmp_path, uninterrupted):
    folder = tmp_path / "split"
    config = _config(folder)
    statuses = [generate_sample_set(pipe, config, rank=r, world_size=2, progress=False) for r in (1, 0)]
    assert [s.written for s in statuses] == [4, 5] and sum(s.written for s in statuses) == N  # batches 1,3 | 0,2,4
    split = _pixels(folder)
    assert sorted(split) == sorted(uninterrupted)
    assert all(np.array_equal(split[name], pixels) for name, pixels in uninterrupted.items())
    assert generate_sample_set(pipe, config, progress=False).written == 0  # complete: nothing left to do


def test_settings_are_recorded_and_a_mismatched_rerun_is_refused(pipe, tmp_path):
    folder = tmp_path / "set"
    generate_sample_set(pipe, _config(folder), progress=False, max_batches=1)
    record = json.loads((folder / "settings.json").read_text())
    assert record["batch_size"] == BATCH and record["classes"] == list(CLASSES) and record["num_images"] == N
    assert record["model"] == "debug pair, seed 7" and record["sampling"]["top_p"] == 0.96  # the fid preset
    assert record["dtype"] == "float32" and "library_version" in record
    with pytest.raises(ValueError, match="other settings.*batch_size: 2 → 4"):
        generate_sample_set(pipe, _config(folder, batch_size=4), progress=False)
    with pytest.raises(ValueError, match="seed: 3 → 4"):
        generate_sample_set(pipe, _config(folder, seed=4), progress=False)


def test_pack_requires_exactly_the_expected_images(pipe, tmp_path):
    folder = tmp_path / "set"
    config = _config(folder)
    generate_sample_set(pipe, config, progress=False, max_batches=4)
    names = expected_names(pipe, config)
    with pytest.raises(ValueError, match="has 8 of 9 images; missing 1, e.g. class0005_seed3000004_row0000.png"):
        pack_npz(folder, names, pipe.image_size, progress=False)
    generate_sample_set(pipe, config, progress=False)
    Image.new("RGB", (8, 8)).save(folder / "stray.png")
    with pytest.raises(ValueError, match="1 PNGs that do not belong, e.g. stray.png"):
        pack_npz(folder, names, pipe.image_size, progress=False)
    (folder / "stray.png").unlink()
    (folder / names[0]).write_bytes(b"\x89PNG\r\n\x1a\n cut short")  # e.g. a disk that filled up
    with pytest.raises(ValueError, match=f"{names[0]} is not a readable image"):
        pack_npz(folder, names, pipe.image_size, progress=False)
    assert not (tmp_path / "set.npz").exists() and not (tmp_path / ".set.npz.tmp").exists()


def test_config_validation():
    with pytest.raises(ValueError, match="per_class"):
        SampleSetConfig("x", per_class=0)
    with pytest.raises(ValueError, match="batch_size"):
        SampleSetConfig("x", batch_size=0)
    with pytest.raises(ValueError, match="classes repeat"):
        SampleSetConfig("x", classes=(1, 1))
    with pytest.raises(ValueError, match="seed"):
        SampleSetConfig("x", seed=-1)


def test_rejection_sampling_keeps_the_best_candidate_of_each_image(pipe, tmp_path):
    """`rejection=M`: each written image is, among M candidates, the one the evaluation classifier gives the highest
    probability of its class; the set has exactly the planned images, and a plain set is candidate-free."""
    pytest.importorskip("safetensors")
    from nextscale.eval.classifier import load_classifier
    from nextscale.eval.rejection import classifier_scorer

    try:
        scorer = classifier_scorer(load_classifier())
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    plain, chosen = tmp_path / "plain", tmp_path / "re"
    generate_sample_set(pipe, _config(plain), progress=False)
    generate_sample_set(pipe, _config(chosen, rejection=4), progress=False)
    assert sorted(p.name for p in chosen.glob("*.png")) == sorted(p.name for p in plain.glob("*.png"))
    assert json.loads((chosen / "settings.json").read_text())["rejection"] == 4

    def mean_score(folder: Path) -> float:
        names = sorted(folder.glob("*.png"))
        images = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1).float() / 255 for p in names])
        labels = torch.tensor([int(p.name[5:9]) for p in names])
        return float(scorer(images, labels).mean())

    assert mean_score(chosen) > mean_score(plain)
