"""The two networks that turn images into features (for FID, KID, precision/recall) and logits (for IS, class accuracy).

- `inception`: torch-fidelity's InceptionV3, the TensorFlow-compatible port that FID papers use: 2048-d pool3
  features, 1008 unbiased logits for IS. torch-fidelity downloads its weights on first use; `weights_path` takes a
  local copy of that file instead (a PyTorch state dict, `.pth`), which is how it runs without a network.
- `fmnist`: nextscale's Fashion-MNIST classifier (`classifier.py`): its penultimate activations and 10 logits. Its
  logits also give the class accuracy of labelled samples.

Both read uint8 (n, H, W, 3) batches of any size and resize themselves (Inception to 299², the classifier to 32²).
Each network has a `name` and a `weights_id` (a hash of its weights) that key the reference-statistics cache.
Letters: n images of a batch, N of a set, D feature dimensions, V logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nextscale.errors import UsageError
from nextscale.eval.classifier import SHIPPED_WEIGHTS, file_sha256, load_classifier
from nextscale.eval.config import FEATURE_NETWORKS  # noqa: F401 (re-exported)
from nextscale.eval.fidelity_backend import import_torch_fidelity
from nextscale.eval.image_sets import ImageSet

INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's registry name of its InceptionV3
INCEPTION_FEATURES = ("2048", "logits_unbiased")  # pool3 for FID/KID/PR, unbiased logits for IS (its defaults)


@dataclass
class FeatureSet:
    """Features (N, D) and logits (N, V) of an image set (float32, CPU), with the set's labels (N,) when known."""

    features_ND: torch.Tensor
    logits_NV: torch.Tensor
    labels_N: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.features_ND)


class ClassifierNetwork:
    """The Fashion-MNIST classifier as a feature network."""

    name = "fmnist"
    classifies_labels = True  # its logits are over the classes of Fashion-MNIST sample sets

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> None:
        path = Path(weights_path) if weights_path is not None else SHIPPED_WEIGHTS
        self.model = load_classifier(path, device)
        self.device = torch.device(device)
        self.weights_id = file_sha256(path)

    @torch.no_grad()
    def __call__(self, images_nHW3: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        pixels_n3HW = torch.from_numpy(np.array(images_nHW3)).to(self.device).permute(0, 3, 1, 2)
        features_nD, logits_nV = self.model.features_and_logits(pixels_n3HW.float() / 127.5 - 1)
        return features_nD.float().cpu(), logits_nV.float().cpu()


class InceptionNetwork:
    """torch-fidelity's InceptionV3 from its download or a local weights file (`.pth` state dict)."""

    name = "inception"
    classifies_labels = False  # 1008 TensorFlow-Inception classes, not the sample set's class ids

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> None:
        tfid = import_torch_fidelity()
        extractor_class = tfid.FeatureExtractorInceptionV3
        if weights_path is None:
            url = tfid.feature_extractor_inceptionv3.URL_INCEPTION_V3
            self.weights_id = "torch-fidelity:" + url.rsplit("/", 1)[-1]  # the file name carries its hash
            try:  # downloaded once into torch.hub's cache, with a progress bar
                self.extractor = extractor_class(INCEPTION_NAME, list(INCEPTION_FEATURES), verbose=True)
            except OSError as err:  # no network (URLError), a refused connection, a full disk
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UsageError(
                    f"could not download the InceptionV3 weights from {url} ({reason}); "
                    "fetch that file elsewhere and pass it with --inception-weights PATH"
                ) from None
        else:
            path = Path(weights_path)
            _check_state_dict_file(path)
            self.weights_id = file_sha256(path)
            try:
                self.extractor = extractor_class(
                    INCEPTION_NAME, list(INCEPTION_FEATURES), feature_extractor_weights_path=str(path)
                )
            except RuntimeError as err:  # load_state_dict: missing / unexpected keys, wrong shapes
                reason = str(err).splitlines()[0]
                raise UsageError(f"--inception-weights {path} is not InceptionV3 weights ({reason})") from None
        self.device = torch.device(device)
        self.extractor.to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images_nHW3: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        pixels_n3HW = torch.from_numpy(np.array(images_nHW3)).to(self.device).permute(0, 3, 1, 2)
        features_nD, logits_nV = self.extractor(pixels_n3HW.contiguous())
        return features_nD.float().cpu(), logits_nV.float().cpu()


def _check_state_dict_file(path: Path) -> None:
    """Refuse anything but a plain tensor state dict before torch-fidelity unpickles the file without restrictions."""
    if not path.is_file():
        raise FileNotFoundError(f"--inception-weights {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises pickle, zip and runtime errors alike
        raise UsageError(f"--inception-weights {path} is not a PyTorch state dict ({type(err).__name__})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(value) for value in state.values()):
        raise UsageError(f"--inception-weights {path} is not a state dict of tensors")


def build_feature_network(
    name: str,
    *,
    inception_weights: str | os.PathLike | None = None,
    classifier_weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> ClassifierNetwork | InceptionNetwork:
    if name == "fmnist":
        return ClassifierNetwork(classifier_weights, device)
    if name == "inception":
        return InceptionNetwork(inception_weights, device)
    raise UsageError(f"unknown feature network {name!r}: choose one of {', '.join(FEATURE_NETWORKS)}")


def extract_features(
    network: ClassifierNetwork | InceptionNetwork,
    image_set: ImageSet,
    batch_size: int = 100,
    progress: bool = True,
) -> FeatureSet:
    features, logits = [], []
    bar = tqdm(
        total=image_set.num_images,
        unit="img",
        desc=f"{network.name} features of {Path(image_set.description).name}",
        disable=not progress,
        dynamic_ncols=True,
        leave=False,
    )
    with bar:
        for images_nHW3 in image_set.batches(batch_size):
            features_nD, logits_nV = network(images_nHW3)
            features.append(features_nD)
            logits.append(logits_nV)
            bar.update(len(images_nHW3))
    return FeatureSet(torch.cat(features), torch.cat(logits), image_set.labels_N)
