"""The metric math on inputs with a known answer: Fréchet distance against its closed form, IS at its two extremes,
precision/recall on point clouds, class accuracy; and the core library importing without torchvision."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("torch_fidelity")

from nextscale.eval.fidelity_metrics import (  # noqa: E402
    GaussianStatistics,
    class_accuracy,
    frechet_distance,
    gaussian_statistics,
    inception_score,
    kernel_distance,
    precision_recall,
)


def _symmetric_sqrt(matrix_DD: np.ndarray) -> np.ndarray:
    values_D, vectors_DD = np.linalg.eigh(matrix_DD)
    return (vectors_DD * np.sqrt(np.clip(values_D, 0, None))) @ vectors_DD.T


def _random_covariance(generator: np.random.Generator, dimensions: int) -> np.ndarray:
    factor_DD = generator.normal(size=(dimensions, dimensions))
    return factor_DD @ factor_DD.T / dimensions + 0.1 * np.eye(dimensions)


def test_frechet_distance_of_gaussians_equals_the_closed_form():
    generator = np.random.default_rng(0)
    dimensions = 6
    mean_1, mean_2 = generator.normal(size=dimensions), generator.normal(size=dimensions)
    covariance_1, covariance_2 = _random_covariance(generator, dimensions), _random_covariance(generator, dimensions)
    # d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½), with symmetric square roots from eigendecompositions
    root_1 = _symmetric_sqrt(covariance_1)
    cross = _symmetric_sqrt(root_1 @ covariance_2 @ root_1)
    expected = np.sum((mean_1 - mean_2) ** 2) + np.trace(covariance_1 + covariance_2 - 2 * cross)
    distance = frechet_distance(GaussianStatistics(mean_1, covariance_1), GaussianStatistics(mean_2, covariance_2))
    assert distance == pytest.approx(expected, rel=1e-9)
    # diagonal covariances: Σ (√a − √b)² plus the mean term
    variances_1, variances_2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    diagonal = frechet_distance(
        GaussianStatistics(np.zeros(3), np.diag(variances_1)), GaussianStatistics(np.ones(3), np.diag(variances_2))
    )
    assert diagonal == pytest.approx(3 + np.sum((np.sqrt(variances_1) - np.sqrt(variances_2)) ** 2), rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_statistics_match_numpy():
    generator = torch.Generator().manual_seed(0)
    features_ND = torch.randn(500, 16, generator=generator) @ torch.randn(16, 16, generator=generator)
    statistics = gaussian_statistics(features_ND)
    np.testing.assert_allclose(statistics.mean_D, features_ND.double().mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(statistics.covariance_DD, np.cov(features_ND.double().numpy(), rowvar=False), rtol=1e-6)
    assert abs(frechet_distance(statistics, statistics)) < 1e-6
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(statistics, gaussian_statistics(features_ND[:, :8]))


def test_inception_score_of_uniform_and_perfectly_confident_classifiers():
    assert inception_score(torch.zeros(1000, 7))[0] == pytest.approx(1.0, abs=1e-9)
    classes = 8
    labels_N = torch.arange(8000) % classes  # balanced
    confident_NV = torch.nn.functional.one_hot(labels_N, classes).float() * 1e4
    assert inception_score(confident_NV, splits=1)[0] == pytest.approx(classes, rel=1e-9)
    # ten shuffled splits are each nearly balanced, so close to n but not above it
    mean, _ = inception_score(confident_NV, splits=10)
    assert classes * 0.97 < mean <= classes + 1e-9


def test_precision_recall_on_point_clouds():
    generator = torch.Generator().manual_seed(0)
    cloud_ND = torch.randn(300, 4, generator=generator)
    assert precision_recall(cloud_ND, cloud_ND.clone()) == (1.0, 1.0)
    assert precision_recall(cloud_ND, cloud_ND + 100.0) == (0.0, 0.0)
    # samples covering only half of the reference: all precise, about half the recall
    reference_ND = torch.randn(600, 2, generator=generator)
    half_ND = reference_ND[reference_ND[:, 0] > 0]
    precision, recall = precision_recall(half_ND, reference_ND)
    assert precision == 1.0
    assert 0.4 < recall < 0.7


def test_kernel_distance_is_near_zero_for_one_distribution_and_large_for_shifted():
    generator = torch.Generator().manual_seed(0)
    first_ND, second_ND = torch.randn(2, 150, 8, generator=generator)
    same, _ = kernel_distance(first_ND, second_ND)
    shifted, _ = kernel_distance(first_ND, second_ND + 0.5)
    farther, _ = kernel_distance(first_ND, second_ND + 2.0)
    assert abs(same) < 0.2 < shifted < farther


def test_class_accuracy():
    logits_NV = torch.tensor([[3.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 5.0]])
    assert class_accuracy(logits_NV, torch.tensor([0, 1, 1, 1])) == 0.75


def test_core_library_and_eval_modules_import_without_torchvision():
    """With torchvision and torch-fidelity made unimportable, nextscale and the eval modules still import, and using
    the metrics says in one line how to install what is missing: both when they are absent (ImportError) and when a
    torchvision built for another torch fails while importing (RuntimeError, as `torchvision::nms` does)."""
    script = """
import sys
class Block:
    error = ImportError
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torchvision", "torch_fidelity"):
            raise self.error(f"blocked {name}")
sys.meta_path.insert(0, Block())
import nextscale, nextscale.cli.evaluation, nextscale.eval.evaluate_samples, nextscale.eval.rejection
import nextscale.eval.classifier_training
from nextscale.eval.fidelity_metrics import inception_score
import torch
for error in (ImportError, RuntimeError):
    Block.error = error
    try:
        inception_score(torch.zeros(40, 3))
    except ImportError as err:
        print(err)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("pip install 'nextscale[eval]'" in line for line in lines), result.stdout
