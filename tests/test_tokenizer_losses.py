"""The optional tokenizer losses: perceptual distance (equal to the `lpips` package's, and its weights file), the patch
discriminator and its adaptive weight, a GAN step in which each player learns only from its own loss, and a
GAN-enabled training run."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nextscale.data.build import DataConfig
from nextscale.data.sampler import ResumableDistributedSampler
from nextscale.distributed import DistributedContext
from nextscale.tokenizer.losses import (
    LPIPS_WIDTHS,
    VGG16_LAYOUT,
    PatchDiscriminator,
    PerceptualLoss,
    adaptive_gan_weight,
    generator_adversarial_loss,
    hinge_discriminator_loss,
)
from nextscale.tokenizer.perceptual_weights import write_perceptual_weights
from nextscale.train.loop import LoopConfig, StepContext, run
from nextscale.train.optim import build_optimizer
from nextscale.train.schedule import apply_schedule
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


# ------------------------------------------------------------------------------------- GAN: two players, two losses

GAN_BATCH = 4


def gan_task(tmp_path) -> tuple[TokenizerTask, list, LoopConfig]:
    """The debug tokenizer at 16 px (scales 1,2,4,8) with the discriminator on from step 0, set up as `run` does,
    and its first batch of sample keys."""
    config = TokenizerTrainConfig(
        preset="debug", tokenizer={"patch_nums": "1,2,4,8"}, gan_weight=0.5, gan_start_step=0, dead_code_every=0,
        data=DataConfig(name="procedural", image_size=16, num_samples=8),
    )  # fmt: skip
    loop = LoopConfig(output_dir=str(tmp_path), steps=1, batch_size=GAN_BATCH, base_lr=0.05, precision="fp32")
    task = TokenizerTask(config)
    task.setup(StepContext(loop, DistributedContext()))
    keys = next(iter(ResumableDistributedSampler(len(task.dataset), GAN_BATCH, seed=0)))
    for optimizer in task.optimizers().values():
        apply_schedule(optimizer, 0, loop.schedule)
    return task, keys, loop


def test_the_generator_pass_leaves_the_discriminator_without_gradient(tmp_path):
    task, keys, _ = gan_task(tmp_path)
    before = copy.deepcopy(task.discriminator.state_dict())
    seen = {}
    clip_and_step = task.ctx.clip_and_step

    def observing_clip_and_step(optimizer, parameters):  # the real step, after a look at the discriminator
        if optimizer is task.optimizer:
            seen["grads"] = [p.grad for p in task.discriminator.parameters()]
            seen["trainable"] = all(p.requires_grad for p in task.discriminator.parameters())
        return clip_and_step(optimizer, parameters)

    task.ctx.clip_and_step = observing_clip_and_step
    metrics = task.train_step(0, keys)
    assert "gan_g_loss" in metrics and "gan_d_loss" in metrics
    assert all(grad is None for grad in seen["grads"])  # after the generator's backward, before any step
    assert seen["trainable"]  # frozen only during the generator pass
    after = task.discriminator.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)  # and it did take its own step


def test_one_gan_step_equals_two_players_stepped_by_hand(tmp_path):
    task, keys, loop = gan_task(tmp_path)
    cfg = task.config
    tokenizer, discriminator = copy.deepcopy(task.tokenizer), copy.deepcopy(task.discriminator)
    task.train_step(0, keys)

    # by hand: each player its own optimizer (as the task builds them) and the gradient of its own loss only
    g_optimizer = build_optimizer(tokenizer, loop.base_lr, GAN_BATCH, weight_decay=loop.weight_decay, betas=(0.5, 0.9))
    d_optimizer = build_optimizer(discriminator, loop.base_lr, GAN_BATCH, weight_decay=0.0, betas=(0.5, 0.9))
    for optimizer in (g_optimizer, d_optimizer):
        apply_schedule(optimizer, 0, loop.schedule)
    images = torch.stack([task.dataset[key][0] for key in keys])
    out = tokenizer(images)
    rec = out.reconstruction
    rec_loss = (rec - images).abs().mean() + F.mse_loss(rec, images)
    g_loss = -discriminator(rec).mean()
    weight = cfg.gan_weight * adaptive_gan_weight(rec_loss, g_loss, tokenizer.decoder.conv_out.weight)
    generator_loss = rec_loss + cfg.vq_weight * out.vq_loss + weight * g_loss
    step_by_hand(tokenizer, generator_loss, g_optimizer, loop.grad_clip)
    real_logits, fake_logits = discriminator(images), discriminator(rec.detach())
    d_loss = 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
    step_by_hand(discriminator, d_loss, d_optimizer, loop.grad_clip)

    for mine, trained in ((tokenizer, task.tokenizer), (discriminator, task.discriminator)):
        for (name, expected), actual in zip(mine.named_parameters(), trained.parameters()):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)


def step_by_hand(module: nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer, clip: float) -> None:
    parameters = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    for parameter, grad in zip(parameters, grads):
        parameter.grad = grad
    torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# -------------------------------------------------------------------------- perceptual weights and LPIPS parity


def random_lpips_layers(path):
    torch.manual_seed(1)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, w, 1, 1) for k, w in enumerate(LPIPS_WIDTHS)}, path)
    return path


def test_write_perceptual_weights_joins_vgg_and_lpips_layers(tmp_path, vgg_weights):
    lpips_file = random_lpips_layers(tmp_path / "lins.pth")
    path = write_perceptual_weights(tmp_path / "out" / "perceptual.pth", vgg_weights, lpips_file)
    loss = PerceptualLoss(path)
    vgg, lins = torch.load(vgg_weights, weights_only=True), torch.load(lpips_file, weights_only=True)
    assert torch.equal(loss.features[0].weight, vgg["features.0.weight"])
    assert torch.equal(loss.features[28].bias, vgg["features.28.bias"])
    for k, weight in enumerate(loss.channel_weights):
        assert torch.equal(weight, lins[f"lin{k}.model.1.weight"])
    assert [p.name for p in path.parent.iterdir()] == ["perceptual.pth"]  # no temporary file left


def test_write_perceptual_weights_errors_are_one_line(tmp_path, vgg_weights):
    lpips_file = random_lpips_layers(tmp_path / "lins.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "few_lins.pth")
    cases = [
        (dict(vgg_weights=tmp_path / "missing.pth", lpips_weights=lpips_file), FileNotFoundError, "missing.pth"),
        (dict(vgg_weights=tmp_path / "partial.pth", lpips_weights=lpips_file), ValueError, "not a torchvision VGG16"),
        (dict(vgg_weights=vgg_weights, lpips_weights=tmp_path / "few_lins.pth"), ValueError, "lin1.model.1.weight"),
        (dict(vgg_weights=vgg_weights, lpips_weights=tmp_path / "gone.pth"), FileNotFoundError, "gone.pth"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error, match=words) as caught:
            write_perceptual_weights(tmp_path / "out.pth", **kwargs)
        assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="is a directory"):
        write_perceptual_weights(tmp_path, vgg_weights, lpips_file)
    assert not (tmp_path / "out.pth").exists()


def test_perceptual_loss_equals_the_lpips_package(tmp_path):
    lpips = pytest.importorskip("lpips", reason="the lpips package (pip install lpips) is the reference here")
    torchvision = pytest.importorskip("torchvision", reason="lpips builds its VGG16 with torchvision")
    assert torchvision.models.vgg16 is not None
    torch.manual_seed(0)
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained` flag
        warnings.simplefilter("ignore")
        # torchvision's random VGG16 init as the backbone, the linear layers shipped in the package
        reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    # the same backbone for ours: lpips keeps torchvision's module index i inside its slices (slice{k}.{i}.weight)
    features = {f"features.{name.split('.', 1)[1]}": p for name, p in reference.net.named_parameters()}
    ours = PerceptualLoss(write_perceptual_weights(tmp_path / "lpips_vgg.pth", vgg_weights=features))
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 64, generator=generator) * 2 - 1  # [-1, 1], the convention of both
    others = (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    with torch.no_grad():
        expected = reference(images, others).flatten()  # one distance per image
        for i in range(len(images)):
            distance = ours(images[i : i + 1], others[i : i + 1]).item()
            print(f"image {i}: ours {distance:.8f} lpips {expected[i].item():.8f}")
            assert distance == pytest.approx(expected[i].item(), abs=1e-5)
        assert ours(images, others).item() == pytest.approx(expected.mean().item(), abs=1e-5)
    assert expected.min() > 1e-3  # a real distance, not a trivial zero
