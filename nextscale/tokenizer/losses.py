"""Losses for training the tokenizer beyond reconstruction + VQ: a patch discriminator and a perceptual distance.

The official VAR code never released tokenizer training; these follow the VQGAN recipe it cites (hinge GAN loss on a
PatchGAN discriminator with an adaptive weight, LPIPS-style perceptual loss on VGG16 features).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """Convolutional discriminator scoring overlapping patches: (B, 3, H, W) → (B, 1, h, w) logits.

    GroupNorm instead of BatchNorm, so it behaves the same for every batch split across processes."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3, num_groups: int = 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, num_layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(min(num_groups, out), out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        return self.layers(images_BCHW)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def adaptive_gan_weight(
    reconstruction_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """‖∇ reconstruction‖ / ‖∇ GAN‖ at the decoder's last layer: balances the two gradients (VQGAN)."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


# VGG16 convolution widths ("M" = max-pool); LPIPS taps the ReLU after the last conv of each of the five stages
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_TAPS = (3, 8, 15, 22, 29)  # indices in `features` of those ReLUs (torchvision's vgg16 numbering)
IMAGENET_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS input normalisation, for images in [-1, 1]
IMAGENET_SCALE = (0.458, 0.448, 0.450)


class PerceptualLoss(nn.Module):
    """LPIPS-style distance: unit-normalised VGG16 features at five depths, squared differences weighted per channel
    (learned LPIPS weights when the file has them, uniform otherwise), averaged over space, summed over depths.

    Weights are read from a local file: a state dict with torchvision-style VGG16 keys `features.{i}.weight/bias`
    and optionally LPIPS keys `lin{k}.model.1.weight`. Nothing is downloaded."""

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"perceptual-loss weights not found: {path} (a VGG16 state dict with features.* keys; "
                "train without --perceptual-weight, or point --perceptual-weights at a local copy)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        layers: list[nn.Module] = []
        channels = 3
        for width in VGG16_LAYOUT:
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers[: LPIPS_TAPS[-1] + 1])
        missing = [k for k in self.features.state_dict() if f"features.{k}" not in state]
        if missing:
            raise ValueError(f"{path} lacks VGG16 weights: {', '.join('features.' + k for k in missing[:4])} …")
        self.features.load_state_dict({k: state[f"features.{k}"] for k in self.features.state_dict()})
        widths = [64, 128, 256, 512, 512]
        self.channel_weights = nn.ParameterList(
            nn.Parameter(state.get(f"lin{k}.model.1.weight", torch.ones(1, w, 1, 1)).reshape(1, w, 1, 1).float())
            for k, w in enumerate(widths)
        )
        self.register_buffer("shift", torch.tensor(IMAGENET_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(IMAGENET_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def _taps(self, images_BCHW: torch.Tensor) -> list[torch.Tensor]:
        h = (images_BCHW - self.shift) / self.scale
        taps = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in LPIPS_TAPS:
                taps.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        return taps

    def forward(self, images_BCHW: torch.Tensor, reference_BCHW: torch.Tensor) -> torch.Tensor:
        """Mean distance over the batch (0 for identical images)."""
        total = images_BCHW.new_zeros(())
        for a, b, weight in zip(self._taps(images_BCHW), self._taps(reference_BCHW), self.channel_weights):
            total = total + ((a - b).square() * weight).sum(dim=1).mean()
        return total

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # always a fixed metric
