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

from nextscale.errors import UsageError
from nextscale.weights import load_strict, read_state_dict


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
LPIPS_WIDTHS = (64, 128, 256, 512, 512)  # channels at those taps: the lengths of the five linear layers
IMAGENET_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS's input normalisation for images in [-1, 1]: (x - shift) / scale
IMAGENET_SCALE = (0.458, 0.448, 0.450)


def vgg16_feature_shapes() -> dict[str, tuple[int, ...]]:
    """Shapes of torchvision's `features.{i}.weight/bias` up to the last LPIPS tap (relu5_3)."""
    shapes, index, channels = {}, 0, 3
    for width in VGG16_LAYOUT:
        if width == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"] = (width, channels, 3, 3)
        shapes[f"features.{index}.bias"] = (width,)
        index, channels = index + 2, width
    return shapes


class PerceptualLoss(nn.Module):
    """LPIPS (v0.1, VGG variant): unit-normalised VGG16 features at five depths, squared differences weighted per
    channel by the learned linear layers, averaged over space, summed over depths, averaged over the batch. For
    images in [-1, 1], the convention of LPIPS and of this library's tokenizer; it equals
    `lpips.LPIPS(net="vgg")(a, b).mean()` (tested against the `lpips` package).

    Real weights come from two public sources, joined into one file by `nextscale.tokenizer.perceptual_weights`
    (`write_perceptual_weights`):
    - the VGG16 trunk: torchvision's ImageNet weights, `torchvision.models.vgg16(weights="IMAGENET1K_V1")`
      (the file vgg16-397923af.pth from download.pytorch.org), which LPIPS itself uses;
    - the five linear layers: fitted to human judgements by the LPIPS authors and shipped inside the `lpips` PyPI
      package as `lpips/weights/v0.1/vgg.pth` (`pip install lpips`).

    The file is a state dict with torchvision's keys `features.{i}.weight/bias` and LPIPS's keys
    `lin{k}.model.1.weight`; without the latter every channel weighs 1 (a plain feature distance, not LPIPS).
    It is read from a local path with torch.load(weights_only=True); nothing is downloaded here."""

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"perceptual-loss weights not found: {path} (a VGG16 state dict with features.* keys; "
                "train without --perceptual-weight, or point --perceptual-weights at a local copy)"
            )
        state = read_state_dict(path)
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
            raise UsageError(f"{path} lacks VGG16 weights: {', '.join('features.' + k for k in missing[:4])} …")
        load_strict(self.features, {k: state[f"features.{k}"].float() for k in self.features.state_dict()}, str(path))
        self.channel_weights = nn.ParameterList(
            nn.Parameter(_channel_weight(state, k, width, path)) for k, width in enumerate(LPIPS_WIDTHS)
        )
        self.register_buffer("shift", torch.tensor(IMAGENET_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(IMAGENET_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def _taps(self, images_BCHW: torch.Tensor) -> list[torch.Tensor]:
        if images_BCHW.shape[1] == 1:  # grey images: the same value in the three colour channels
            images_BCHW = images_BCHW.expand(-1, 3, -1, -1)
        h = (images_BCHW - self.shift) / self.scale
        taps = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in LPIPS_TAPS:
                taps.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return taps

    def forward(self, images_BCHW: torch.Tensor, reference_BCHW: torch.Tensor) -> torch.Tensor:
        """Mean distance over the batch (0 for identical images)."""
        total = images_BCHW.new_zeros(())
        for a, b, weight in zip(self._taps(images_BCHW), self._taps(reference_BCHW), self.channel_weights):
            total = total + ((a - b).square() * weight).sum(dim=1).mean()
        return total

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # always a fixed metric


def _channel_weight(state: dict[str, torch.Tensor], k: int, width: int, path: Path) -> torch.Tensor:
    """LPIPS's linear layer k as a (1, width, 1, 1) channel weighting; ones when the file has none."""
    weight = state.get(f"lin{k}.model.1.weight")
    if weight is None:
        return torch.ones(1, width, 1, 1)
    if weight.numel() != width:
        raise UsageError(f"{path}: lin{k}.model.1.weight has {weight.numel()} values, LPIPS's VGG layer {k} {width}")
    return weight.reshape(1, width, 1, 1).float()
