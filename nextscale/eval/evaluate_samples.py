"""`nextscale eval-samples`: FID, IS, KID, precision/recall and class accuracy of a sample set against a reference.

    samples    a folder of images or an .npz (image_sets.py), or fashion-mnist:train / :test at 32 px: real images
               scored like samples, the floor a model's figures are read against
    reference  fashion-mnist:test | fashion-mnist:train (loaded at the samples' size) | a folder | an .npz
    features   fmnist (the shipped Fashion-MNIST classifier) | inception (InceptionV3, optionally from a local file)

The reference's features and statistics come from the cache (reference_cache.py). IS and class accuracy use the
feature network's logits; class accuracy needs labels (sample-set file names or an .npz `labels` array) and a network
whose classes are the samples' (fmnist), and is None otherwise. Paper-comparable ImageNet figures: `--features
inception` here, or the OpenAI evaluator (guided-diffusion `evaluations/evaluator.py`) on the .npz `sample-set` writes.
"""

from __future__ import annotations

import os
import time

import torch

from nextscale.errors import UsageError
from nextscale.eval.config import FEATURE_NETWORKS, EvaluationConfig  # noqa: F401 (re-exported)
from nextscale.eval.feature_networks import build_feature_network, extract_features
from nextscale.eval.fidelity_metrics import (
    class_accuracy,
    frechet_distance,
    gaussian_statistics,
    inception_score,
    kernel_distance,
    precision_recall,
)
from nextscale.eval.image_sets import ImageSet, ReconstructedSet, load_reference, tokenizer_reconstruction
from nextscale.eval.reference_cache import reference_features
from nextscale.pretrained import from_pretrained

BUILTIN_SAMPLES_SIZE = 32  # real Fashion-MNIST given as samples is read at the size the library trains on

TABLE_ROWS = (
    ("reconstruction_psnr", "PSNR (recon., dB)", "{:.2f}"),
    ("fid", "FID", "{:.3f}"),
    ("inception_score", "Inception Score", "{:.3f}"),
    ("kid", "KID", "{:.5f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall", "{:.4f}"),
    ("class_accuracy", "class accuracy", "{:.4f}"),
    ("num_samples", "samples", "{}"),
    ("num_reference", "reference images", "{}"),
)


def evaluate_samples(config: EvaluationConfig, progress: bool = True) -> dict:
    """The metrics as a JSON-ready dict (see TABLE_ROWS; `_std`: the spread over IS splits and KID subsets)."""
    started = time.perf_counter()
    # a folder or .npz, or a built-in split: real images as "samples", the floor row (e.g. train against test)
    samples = load_reference(config.samples, BUILTIN_SAMPLES_SIZE, config.data_root, "--samples")
    if samples.height != samples.width and config.reference.startswith("fashion-mnist"):
        raise UsageError(f"{config.samples}: images are {samples.width}×{samples.height}; Fashion-MNIST needs squares")
    reference = load_reference(config.reference, samples.height, config.data_root, "--reference")
    reconstructed = None
    if config.reconstruct_with is not None:
        reconstructed = _reconstructed(samples, config.reconstruct_with, config.device)
        samples = reconstructed.image_set
    network = build_feature_network(
        config.features,
        inception_weights=config.inception_weights,
        classifier_weights=config.classifier_weights,
        device=config.device,
    )
    cached = reference_features(
        reference,
        network,
        cache_dir=config.cache_dir,
        use_cache=config.use_cache,
        batch_size=config.batch_size,
        progress=progress,
    )
    extraction_started = time.perf_counter()
    sample_features = extract_features(network, samples, config.batch_size, progress)
    extraction_seconds = time.perf_counter() - extraction_started
    fid = frechet_distance(gaussian_statistics(sample_features.features_ND), cached.statistics)
    is_mean, is_std = inception_score(sample_features.logits_NV, splits=min(10, len(sample_features)))
    kid_mean, kid_std = kernel_distance(sample_features.features_ND, cached.features.features_ND)
    precision, recall = precision_recall(sample_features.features_ND, cached.features.features_ND)
    labels_N = sample_features.labels_N
    has_classes = (  # labels that are the network's classes; otherwise class accuracy is None
        network.classifies_labels
        and labels_N is not None
        and 0 <= int(labels_N.min()) <= int(labels_N.max()) < sample_features.logits_NV.shape[1]
    )
    accuracy = class_accuracy(sample_features.logits_NV, labels_N) if has_classes else None
    return {
        "fid": fid,
        "inception_score": is_mean,
        "inception_score_std": is_std,
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "class_accuracy": accuracy,
        "reconstruction_psnr": reconstructed.psnr if reconstructed is not None else None,
        "num_samples": samples.num_images,
        "num_reference": reference.num_images,
        "features": network.name,
        "feature_weights": network.weights_id,
        "samples": os.fspath(config.samples),
        "reference": config.reference,
        "image_size": [samples.height, samples.width],
        "reference_from_cache": cached.from_cache,
        "reference_cache_file": os.fspath(cached.cache_file) if cached.cache_file else None,
        "feature_images_per_second": round(samples.num_images / max(extraction_seconds, 1e-9), 1),
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }


def _reconstructed(samples: ImageSet, model_directory: str, device: str) -> ReconstructedSet:
    """`samples` through the tokenizer of `model_directory` (a model or tokenizer directory, or a shipped name)."""
    tokenizer, _ = from_pretrained(model_directory, device)
    if tokenizer is None:
        raise UsageError(f"--reconstruct-with {model_directory}: it holds no tokenizer")
    if tokenizer.config.image_size != samples.height or samples.height != samples.width:
        raise UsageError(
            f"--reconstruct-with {model_directory}: the tokenizer takes {tokenizer.config.image_size} px images, "
            f"the samples are {samples.width}×{samples.height}"
        )
    reconstruct = tokenizer_reconstruction(tokenizer)
    return ReconstructedSet(samples, lambda x: reconstruct(x.to(device)).cpu(), f"the tokenizer of {model_directory}")


def format_table(result: dict) -> str:
    """A two-column text table of the main figures."""
    title = f"{result['samples']} vs {result['reference']} ({result['features']} features)"
    lines = [title, "-" * len(title)]
    for key, label, form in TABLE_ROWS:
        value = result.get(key)
        if key == "reconstruction_psnr" and value is None:
            continue
        shown = "n/a" if value is None else form.format(value)
        if key in ("inception_score", "kid") and value is not None:
            shown += f" ± {form.format(result[key + '_std'])}"
        lines.append(f"{label:<18} {shown}")
    return "\n".join(lines)
