"""Sample-quality metrics over feature sets: FID, Inception Score, KID, precision/recall, class accuracy.

The math is torch-fidelity's (`fid_features_to_statistics`, `fid_statistics_to_metric`, `isc_features_to_metric`,
`kid_features_to_metric`, `prc_features_to_metric`), so the numbers are the field's. These functions only choose
arguments, convert types and name the results. Written by hand, because no maintained library offers them in this
form:
- `class_accuracy`: the share of samples the classifier assigns to the class they were drawn for; a two-line argmax
  comparison that torch-fidelity has no notion of (it never sees labels).
- the KID subset size is capped at the set sizes (torch-fidelity refuses sets smaller than its default of 1,000).

Conventions follow torch-fidelity: for precision/recall, `samples` are the generated set and `reference` the real one;
precision = share of samples inside the real k-NN manifold, recall = share of real images inside the samples' one.
Letters: N images, D feature dimensions, V classes of a classifier's logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nextscale.errors import UsageError
from nextscale.eval.fidelity_backend import import_torch_fidelity

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PRC_NEIGHBORHOOD = 3  # k of the k-NN manifolds (Kynkäänniemi et al. 2019 use 3)
PRC_BATCH_SIZE = 2048  # rows of each distance block: 2048 × 50,000 floats = 400 MB at most
IS_SPLITS = 10
RNG_SEED = 2020  # torch-fidelity's default seed for the KID subsets and IS shuffling


@dataclass(frozen=True)
class GaussianStatistics:
    """Mean (D,) and covariance (D, D) of a feature set, float64: the reference half of FID."""

    mean_D: np.ndarray
    covariance_DD: np.ndarray

    def __post_init__(self) -> None:
        dimensions = self.mean_D.shape[0]
        if self.mean_D.ndim != 1 or self.covariance_DD.shape != (dimensions, dimensions):
            raise ValueError(f"bad statistics shapes: mean {self.mean_D.shape}, covariance {self.covariance_DD.shape}")


def _check_features(features_ND: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(features_ND) or features_ND.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) tensor")
    if len(features_ND) < 2:
        raise UsageError(f"{name} needs at least 2 rows, got {len(features_ND)}")
    return features_ND.detach().float().cpu()


def gaussian_statistics(features_ND: torch.Tensor) -> GaussianStatistics:
    tfid = import_torch_fidelity()
    statistics = tfid.metric_fid.fid_features_to_statistics(_check_features(features_ND, "features").double())
    return GaussianStatistics(np.asarray(statistics["mu"], np.float64), np.asarray(statistics["sigma"], np.float64))


def frechet_distance(first: GaussianStatistics, second: GaussianStatistics) -> float:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½): FID when the statistics are of Inception pool features."""
    if first.mean_D.shape != second.mean_D.shape:
        raise ValueError(f"feature dimensions differ: {first.mean_D.shape[0]} vs {second.mean_D.shape[0]}")
    tfid = import_torch_fidelity()
    as_dict = [{"mu": s.mean_D, "sigma": s.covariance_DD} for s in (first, second)]
    return float(tfid.metric_fid.fid_statistics_to_metric(*as_dict, verbose=False)[tfid.KEY_METRIC_FID])


def inception_score(logits_NV: torch.Tensor, splits: int = IS_SPLITS) -> tuple[float, float]:
    """(mean, standard deviation over `splits` shuffled splits) of exp E[KL(p(y|x) ‖ p(y))], from logits."""
    logits_NV = _check_features(logits_NV, "logits")
    if not 1 <= splits <= len(logits_NV):
        raise ValueError(f"splits must be in [1, {len(logits_NV)}], got {splits}")
    tfid = import_torch_fidelity()
    out = tfid.metric_isc.isc_features_to_metric(logits_NV, splits=splits, shuffle=True, rng_seed=RNG_SEED)
    return out[tfid.KEY_METRIC_ISC_MEAN], out[tfid.KEY_METRIC_ISC_STD]


def kernel_distance(samples_ND: torch.Tensor, reference_ND: torch.Tensor) -> tuple[float, float]:
    """KID (mean, std over random subsets): unbiased MMD² with the cubic polynomial kernel."""
    samples_ND, reference_ND = _check_features(samples_ND, "samples"), _check_features(reference_ND, "reference")
    tfid = import_torch_fidelity()
    out = tfid.metric_kid.kid_features_to_metric(
        samples_ND,
        reference_ND,
        kid_subsets=KID_SUBSETS,
        kid_subset_size=min(KID_SUBSET_SIZE, len(samples_ND), len(reference_ND)),
        rng_seed=RNG_SEED,
        verbose=False,
    )
    return out[tfid.KEY_METRIC_KID_MEAN], out[tfid.KEY_METRIC_KID_STD]


def precision_recall(
    samples_ND: torch.Tensor, reference_ND: torch.Tensor, neighborhood: int = PRC_NEIGHBORHOOD
) -> tuple[float, float]:
    """Improved precision and recall (k-NN manifolds, k = `neighborhood`), each in [0, 1]."""
    samples_ND, reference_ND = _check_features(samples_ND, "samples"), _check_features(reference_ND, "reference")
    if min(len(samples_ND), len(reference_ND)) <= neighborhood:
        raise UsageError(f"precision/recall with k = {neighborhood} needs more than {neighborhood} images per set")
    tfid = import_torch_fidelity()
    out = tfid.metric_prc.prc_features_to_metric(
        samples_ND,
        reference_ND,
        prc_neighborhood=neighborhood,
        prc_batch_size=PRC_BATCH_SIZE,
        save_cpu_ram=True,
        verbose=False,
    )
    return out[tfid.KEY_METRIC_PRECISION], out[tfid.KEY_METRIC_RECALL]


def class_accuracy(logits_NV: torch.Tensor, labels_N: torch.Tensor) -> float:
    """Share of images whose most likely class is their label."""
    if logits_NV.ndim != 2 or labels_N.shape != (len(logits_NV),):
        raise ValueError(
            f"logits (N, V) and labels (N,) expected, got {tuple(logits_NV.shape)}, {tuple(labels_N.shape)}"
        )
    return float((logits_NV.argmax(1).cpu() == labels_N.cpu()).float().mean())
