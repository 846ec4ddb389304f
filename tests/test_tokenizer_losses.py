"""The optional tokenizer losses: perceptual distance from local VGG16 weights, the patch discriminator and its
adaptive weight, and a GAN-enabled training run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nextscale.data.build import DataConfig
from nextscale.tokenizer.losses import (
    VGG16_LAYOUT,
    PatchDiscriminator,
    PerceptualLoss,
    adaptive_gan_weight,
    generator_adversarial_loss,
    hinge_discriminator_loss,
)
from nextscale.train.loop import LoopConfig, run
from nextscale.train.tokenizer_task import TokenizerTask, TokenizerTrainConfig


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """Random weights in torchvision's VGG16 layout (`features.{i}.weight/bias`) saved to a local file."""
    torch.manual_seed(0)
    state, index, channels = {}, 0, 3
    for width in VGG16_LAYOUT:
        if width == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3) * (2 / (9 * channels)) ** 0.5
        state[f"features.{index}.bias"] = torch.zeros(width)
        index, channels = index + 2, width
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path


def test_perceptual_distance_is_zero_for_equal_images_and_grows_with_noise(vgg_weights):
    loss = PerceptualLoss(vgg_weights)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss(images, images).item() == pytest.approx(0.0, abs=1e-6)
    small = loss(images + 0.05 * torch.randn_like(images), images).item()
    large = loss(images + 0.5 * torch.randn_like(images), images).item()
    assert 0 < small < large
    assert not any(p.requires_grad for p in loss.parameters())


def test_perceptual_weights_must_exist_and_be_vgg16(tmp_path):
    with pytest.raises(FileNotFoundError, match="perceptual-loss weights not found"):
        PerceptualLoss(tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lacks VGG16 weights"):
        PerceptualLoss(tmp_path / "partial.pth")


def test_hinge_losses_and_adaptive_weight():
    real, fake = torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0)
    assert hinge_discriminator_loss(real, fake).item() == 0.0  # confident and right: no loss
    assert hinge_discriminator_loss(fake, real).item() == pytest.approx(3.0)  # confident and wrong
    assert generator_adversarial_loss(fake).item() == 2.0
    layer = nn.Linear(4, 4)
    x = torch.randn(8, 4)
    out = layer(x)
    rec, gan = out.square().mean(), 10 * out.mean()
    weight = adaptive_gan_weight(rec, gan, layer.weight)
    rec_grad = torch.autograd.grad(rec, layer.weight, retain_graph=True)[0].norm()
    gan_grad = torch.autograd.grad(gan, layer.weight, retain_graph=True)[0].norm()
    assert weight.item() == pytest.approx((rec_grad / (gan_grad + 1e-4)).item(), rel=1e-5)


def test_patch_discriminator_scores_patches():
    logits = PatchDiscriminator(num_layers=2)(torch.randn(2, 3, 32, 32))
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] > 1


def test_a_gan_and_perceptual_run_trains_both_players(tmp_path, vgg_weights):
    config = TokenizerTrainConfig(
        preset="fmnist-32",
        perceptual_weight=0.1,
        perceptual_weights=str(vgg_weights),
        gan_weight=0.5,
        gan_start_step=1,
        dead_code_every=0,
        data=DataConfig(name="procedural", image_size=32, num_samples=16),
    )
    loop = LoopConfig(
        output_dir=str(tmp_path), steps=3, batch_size=8, base_lr=1e-3, precision="fp32", log_every=1,
        eval_every=0, eval_batches=1, save_every=3, progress=False,
    )  # fmt: skip
    run(TokenizerTask(config), loop)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if "train/loss" in line]
    assert "train/gan_g_loss" not in train[0]  # the discriminator starts at gan_start_step
    assert all("train/gan_g_loss" in line and "train/gan_d_loss" in line for line in train[1:])
    checkpoint = sorted((tmp_path / "checkpoints").glob("step_*"))[-1]
    assert (checkpoint / "discriminator.safetensors").is_file()
