"""The tokenizer's floor: real images round-tripped through a tokenizer and scored like samples. An identity
stand-in for the tokenizer must score exactly what the images themselves score; a real tokenizer loses detail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torch_fidelity")

from nextscale import save_pretrained  # noqa: E402
from nextscale.eval import evaluate_samples as evaluation  # noqa: E402
from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples  # noqa: E402
from nextscale.eval.image_sets import ReconstructedSet, images_set  # noqa: E402
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset  # noqa: E402


def _images(seed: int, count: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random gray blobs (so features differ between sets) with labels, uint8 (N, 32, 32, 3)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 1, 4, 4, generator=generator)
    gray = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
    images = gray.mul(255).round().to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
    return images, np.arange(count) % 10


@pytest.fixture()
def sets(tmp_path: Path) -> tuple[Path, Path, Path]:
    samples, labels = _images(0)
    reference, reference_labels = _images(1)
    np.savez(tmp_path / "samples.npz", arr_0=samples, labels=labels)
    np.savez(tmp_path / "reference.npz", arr_0=reference, labels=reference_labels)
    torch.manual_seed(0)
    tokenizer = save_pretrained(tmp_path / "tokenizer", tokenizer=Tokenizer(tokenizer_preset("fmnist-32")))
    return tmp_path / "samples.npz", tmp_path / "reference.npz", tokenizer


def _config(samples: Path, reference: Path, tmp_path: Path, **extra) -> EvaluationConfig:
    return EvaluationConfig(samples=str(samples), reference=str(reference), cache_dir=str(tmp_path / "cache"), **extra)


def test_an_identity_tokenizer_scores_the_same_as_the_real_images(sets, tmp_path, monkeypatch):
    samples, reference, tokenizer = sets
    plain = evaluate_samples(_config(samples, reference, tmp_path), progress=False)
    monkeypatch.setattr(evaluation, "tokenizer_reconstruction", lambda tokenizer: lambda images: images)
    identity = evaluate_samples(_config(samples, reference, tmp_path, reconstruct_with=str(tokenizer)), progress=False)
    for key in ("fid", "inception_score", "kid", "precision", "recall", "class_accuracy", "num_samples"):
        assert identity[key] == pytest.approx(plain[key], rel=1e-6, abs=1e-9), key
    assert identity["reconstruction_psnr"] == pytest.approx(100.0)  # no error at all: the 1e-10 MSE clamp
    assert plain["reconstruction_psnr"] is None


def test_a_real_tokenizer_changes_the_images_and_reports_its_psnr(sets, tmp_path):
    samples, reference, tokenizer = sets
    plain = evaluate_samples(_config(samples, reference, tmp_path), progress=False)
    through = evaluate_samples(_config(samples, reference, tmp_path, reconstruct_with=str(tokenizer)), progress=False)
    assert 0 < through["reconstruction_psnr"] < 60  # an untrained tokenizer loses most of the picture
    assert through["fid"] != pytest.approx(plain["fid"])
    assert through["num_samples"] == plain["num_samples"]


def test_the_reconstructed_set_keeps_labels_and_averages_psnr_over_images():
    images, labels = _images(2, count=7)
    source = images_set(images, labels, "blobs")
    halved = ReconstructedSet(source, lambda x: x * 0.5, "halving")
    batches = list(halved.image_set.batches(3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert torch.equal(halved.image_set.labels_N, torch.as_tensor(labels))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    expected = 10 * torch.log10(1 / ((x * 0.5 - x) / 2).square().flatten(1).mean(1))
    assert halved.psnr == pytest.approx(float(expected.mean()), rel=1e-5)


def test_a_tokenizer_of_another_size_is_refused(sets, tmp_path):
    samples, reference, _ = sets
    small = save_pretrained(tmp_path / "small", tokenizer=Tokenizer(tokenizer_preset("debug")))
    with pytest.raises(ValueError, match="px images"):
        evaluate_samples(_config(samples, reference, tmp_path, reconstruct_with=str(small)), progress=False)
