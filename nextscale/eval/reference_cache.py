"""Reference features and statistics, computed once and cached on disk.

The reference half of FID (mean and covariance) needs every reference image to pass through the feature network; for
Fashion-MNIST that is 10,000 images, for ImageNet 50,000 at 299² through Inception. They are cached as one safetensors
file per key, holding the features and logits (KID and precision/recall need them), the labels, and the Gaussian
statistics. The key is a hash of everything that decides them:

    data set and split (or the folder / .npz path with its file count, byte count and modification time)
    feature network name and a hash of its weights
    image size of the reference images as fed to the network
    CACHE_FORMAT (bumped when the stored content changes meaning)

so changing any of them misses the cache and recomputes; the key is also stored in the file and checked on reading.
Cache directory: `cache_dir`, else $NEXTSCALE_CACHE_DIR, else $XDG_CACHE_HOME/nextscale, else ~/.cache/nextscale;
files go to its `reference-features/` folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from nextscale.eval.feature_networks import ClassifierNetwork, FeatureSet, InceptionNetwork, extract_features
from nextscale.eval.fidelity_metrics import GaussianStatistics, gaussian_statistics
from nextscale.eval.image_sets import ImageSet
from nextscale.weights import write_safetensors

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_SUBDIR = "reference-features"
KEY_METADATA = "reference_key"


def default_cache_dir() -> Path:
    if os.environ.get("NEXTSCALE_CACHE_DIR"):
        return Path(os.environ["NEXTSCALE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nextscale"


@dataclass
class ReferenceFeatures:
    features: FeatureSet
    statistics: GaussianStatistics
    cache_file: Path | None  # where they are cached (None: not cacheable)
    from_cache: bool  # True when read from cache_file rather than computed


def reference_key(image_set: ImageSet, network: ClassifierNetwork | InceptionNetwork) -> dict:
    return {
        "format": CACHE_FORMAT,
        "reference": image_set.fingerprint,
        "feature_network": network.name,
        "weights": network.weights_id,
        "image_size": [image_set.height, image_set.width],
    }


def cache_file_for(key: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    text = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    source = key["reference"]
    label = f"{source['dataset']}-{source['split']}" if "dataset" in source else Path(next(iter(source.values()))).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:60]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / CACHE_SUBDIR / f"{slug}-{key['feature_network']}-{digest}.safetensors"


def reference_features(
    image_set: ImageSet,
    network: ClassifierNetwork | InceptionNetwork,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    batch_size: int = 100,
    progress: bool = True,
) -> ReferenceFeatures:
    """The reference set's features and statistics, from the cache when its key matches, else computed (and cached).
    A set without a fingerprint (in memory) is never cached."""
    cacheable = use_cache and bool(image_set.fingerprint)
    key = reference_key(image_set, network)
    path = cache_file_for(key, cache_dir) if cacheable else None
    if path is not None and path.is_file():
        cached = _read(path, key)
        if cached is not None:
            return ReferenceFeatures(*cached, cache_file=path, from_cache=True)
    features = extract_features(network, image_set, batch_size, progress)
    statistics = gaussian_statistics(features.features_ND)
    if path is not None:
        _write(path, key, features, statistics)
    return ReferenceFeatures(features, statistics, cache_file=path, from_cache=False)


def _write(path: Path, key: dict, features: FeatureSet, statistics: GaussianStatistics) -> None:
    tensors = {
        "features_ND": features.features_ND.contiguous(),
        "logits_NV": features.logits_NV.contiguous(),
        "mean_D": torch.from_numpy(statistics.mean_D).contiguous(),
        "covariance_DD": torch.from_numpy(statistics.covariance_DD).contiguous(),
    }
    if features.labels_N is not None:
        tensors["labels_N"] = features.labels_N.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_safetensors(tensors, temporary, metadata={KEY_METADATA: json.dumps(key, sort_keys=True)})
    os.replace(temporary, path)


def _read(path: Path, key: dict) -> tuple[FeatureSet, GaussianStatistics] | None:
    """The cached content, or None (with a warning) when the file is damaged or holds another key."""
    try:
        with safe_open(str(path), framework="pt") as file:
            stored_key = json.loads((file.metadata() or {}).get(KEY_METADATA, "null"))
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except Exception as err:  # a damaged or truncated file: recompute
        logger.warning("ignoring unreadable cache file %s (%s)", path, err)
        return None
    if stored_key != json.loads(json.dumps(key, sort_keys=True)):
        logger.warning("cache file %s holds another key; recomputing", path)
        return None
    features = FeatureSet(tensors["features_ND"], tensors["logits_NV"], tensors.get("labels_N"))
    statistics = GaussianStatistics(tensors["mean_D"].numpy(), tensors["covariance_DD"].numpy())
    return features, statistics
