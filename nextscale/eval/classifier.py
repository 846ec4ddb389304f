"""A small CNN that classifies Fashion-MNIST: its probabilities judge samples (Inception Score, class accuracy of
samples, rejection sampling) and its penultimate activations give a domain FID for 28/32-px grayscale images.

Input: (B, C, H, W) floats in [-1, 1] with C = 1 (grayscale) or 3 (RGB; the channels are averaged to gray), any H × W.
`prepare` brings every batch to 1 × 32 × 32, the size nextscale trains its Fashion-MNIST models at: other sizes are
resized bilinearly with antialiasing, exactly as `nextscale.data` resizes the 28-px IDX images, so a native 28-px image
and its 32-px copy from the data module reach the network as the same picture (up to uint8 rounding).

    prepare     → (B, 1, 32, 32)
    body        conv3×3-BN-ReLU ×2 at 32², maxpool → ×2 at 16², maxpool → ×1 at 8², maxpool → 4 × 4 map, flattened
    features    linear + ReLU → (B, F)      the penultimate activations ("fmnist" features)
    logits      linear → (B, num_classes)

The shipped weights (`weights/fmnist_classifier.safetensors`, with the recipe that made them in the JSON beside it) are
loaded by `load_classifier()`; `nextscale train-classifier` remakes them. Letters: B batch, C channels, F features.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from nextscale.errors import UsageError
from nextscale.eval.config import ClassifierConfig  # noqa: F401 (re-exported)
from nextscale.weights import write_safetensors

INPUT_SIZE = 32  # side every input is resized to (that of the 32-px Fashion-MNIST of nextscale.data)
WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED_WEIGHTS = WEIGHTS_DIR / "fmnist_classifier.safetensors"
STORAGE_DTYPE = torch.float16  # of the weights file; the model computes in float32
CONFIG_KEY = "classifier_config"  # safetensors metadata entry holding the ClassifierConfig as JSON


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class FashionClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClassifierConfig()
        wide_32, wide_16, wide_8 = self.config.widths
        self.body = nn.Sequential(
            *_conv_block(1, wide_32),
            *_conv_block(wide_32, wide_32),
            nn.MaxPool2d(2),
            *_conv_block(wide_32, wide_16),
            *_conv_block(wide_16, wide_16),
            nn.MaxPool2d(2),
            *_conv_block(wide_16, wide_8),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.hidden = nn.Linear(wide_8 * (INPUT_SIZE // 8) ** 2, self.config.feature_dim)
        self.head = nn.Linear(self.config.feature_dim, self.config.num_classes)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        for module in self.modules():
            if module is self.head:
                # small logits at the start, so the first steps do not fight a random confident guess
                nn.init.normal_(module.weight, std=0.01, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d | nn.Linear):
                # He initialisation: every other layer is followed by ReLU
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                # identity affine at the start
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def prepare(images_BCHW: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images, 1 or 3 channels, any size → (B, 1, 32, 32) grayscale."""
        if images_BCHW.ndim != 4 or images_BCHW.shape[1] not in (1, 3):
            raise ValueError(f"expected images (B, 1 or 3, H, W), got shape {tuple(images_BCHW.shape)}")
        gray_B1HW = images_BCHW.float().mean(1, keepdim=True)
        if gray_B1HW.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            gray_B1HW = F.interpolate(gray_B1HW, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        return gray_B1HW.contiguous(memory_format=torch.channels_last)

    def features_and_logits(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features (B, F), logits (B, num_classes))."""
        features_BF = F.relu(self.hidden(self.body(self.prepare(images_BCHW))))
        return features_BF, self.head(features_BF)

    def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images_BCHW)[1]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def round_to_storage_precision(model: FashionClassifier) -> FashionClassifier:
    """Round every floating tensor to float16 in place (kept as float32): the model as `save_classifier` stores it, so
    that accuracy measured afterwards is the shipped file's."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(STORAGE_DTYPE))
    return model


def save_classifier(model: FashionClassifier, path: str | os.PathLike, record: dict | None = None) -> Path:
    """Weights as float16 safetensors (config in its metadata; half the bytes, and float16 keeps the accuracy) and,
    when given, `record` (recipe, accuracy) as JSON beside them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: (tensor.to(STORAGE_DTYPE) if tensor.is_floating_point() else tensor).detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
    }
    temporary = path.with_name(f".{path.name}.tmp")
    write_safetensors(tensors, temporary, metadata={CONFIG_KEY: json.dumps(asdict(model.config))})
    os.replace(temporary, path)
    if record is not None:
        path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return path


def load_classifier(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FashionClassifier:
    """The classifier from a safetensors file written by `save_classifier`; by default the weights shipped with
    nextscale. In eval mode, without gradients."""
    path = Path(path) if path is not None else SHIPPED_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"classifier weights {path} not found (make them with `nextscale train-classifier`)")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise UsageError(f"{path} is not a readable safetensors file ({err})") from None
    if CONFIG_KEY not in metadata:
        raise UsageError(f"{path} has no {CONFIG_KEY!r} metadata; it was not written by save_classifier")
    model = FashionClassifier(ClassifierConfig(**json.loads(metadata[CONFIG_KEY])))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first_line = str(err).splitlines()[0]
        raise UsageError(f"{path} does not match its classifier config ({first_line})") from None
    model.to(device=device, memory_format=torch.channels_last)
    return model.eval().requires_grad_(False)
