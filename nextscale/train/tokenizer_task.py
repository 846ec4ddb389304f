"""Training the multi-scale tokenizer: reconstruction + multi-scale VQ loss, optional perceptual and GAN losses,
per-scale codebook usage, dead-code restarts and an optional EMA of the weights.

GAN: the generator (tokenizer) pass sees the discriminator frozen, so only the tokenizer receives the generator's
−D(fake) gradient; the discriminator then takes its own hinge step on detached reconstructions, from cleared
gradients. Two players, two optimizers, each trained on its own loss only.

Codebook usage is measured from what training has actually seen: decayed hit counts per scale and code (each step
multiplies them by USAGE_DECAY and adds the step's hits), so a code's rate is its share of the recent tokens and a
collapse shows from step 1. The coarse scales see few, large residuals and tend to collapse onto a handful of codes;
codes whose rate stays low are restarted on residual vectors drawn from the current batch (all scales pooled), with
their optimizer moments and hit counts reset. A code is judged only once it has held its vector for
`dead_code_grace_steps` (default: one horizon of the counts, 100 steps), so a restarted code has time to collect hits
before it can be called dead again; the initial codes count from step 0.
Letters: B batch, K scales, V vocabulary, C latent channels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nextscale.data.config import DataConfig
from nextscale.distributed import sum_over_processes
from nextscale.errors import UsageError
from nextscale.eval.metrics import evaluate_tokenizer, psnr
from nextscale.pretrained import save_pretrained
from nextscale.tokenizer.losses import (
    PatchDiscriminator,
    PerceptualLoss,
    adaptive_gan_weight,
    generator_adversarial_loss,
    hinge_discriminator_loss,
)
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset
from nextscale.train.distributed import full_state_dict, load_full_state_dict, unwrap_model, wrap_model
from nextscale.train.ema import EMA
from nextscale.train.memory import require_trainable
from nextscale.train.optim import build_optimizer
from nextscale.train.task import StepContext, Task
from nextscale.train.tokenizer_config import TokenizerTrainConfig

logger = logging.getLogger(__name__)

RESTART_STREAM = 0xC0DE  # purpose id of the dead-code restart generator
USAGE_DECAY = 0.99  # per-step decay of the code hit counts: they cover about the last 1 / (1 - 0.99) = 100 steps
USED_FRACTION_OF_UNIFORM = 0.01  # usage metric: a code counts as used above 1% of the uniform rate 1/V


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """`module`'s parameters do not require grad inside the block (gradients still flow through it to its input);
    their previous flags come back afterwards."""
    flags = [parameter.requires_grad for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


class TokenizerTask(Task):
    """Training the multi-scale tokenizer (see the module docstring): reconstruction, VQ and the optional perceptual
    and GAN losses, codebook usage per scale with dead-code restarts, an optional EMA. Exports the tokenizer alone."""

    name = "tokenizer"
    whole_value_settings = ("tokenizer",)  # the preset overrides: their keys are data, not fields

    def __init__(self, config: TokenizerTrainConfig):
        self.config = config
        self.data = config.data or DataConfig()

    def setup(self, ctx: StepContext) -> None:
        self.ctx = ctx
        device = ctx.dist.device
        tokenizer_config = tokenizer_preset(self.config.preset, **self.config.tokenizer)
        if self.data.image_size != tokenizer_config.image_size:
            raise UsageError(
                f"the tokenizer preset {self.config.preset!r} takes {tokenizer_config.image_size} px images "
                f"(final scale {tokenizer_config.patch_nums[-1]} × downsampling {tokenizer_config.downsample_factor}), "
                f"but the data is {self.data.image_size} px: change --image-size or the preset"
            )
        self.dataset = self.data.build("train")
        self.val_dataset = self.data.build_validation()
        require_trainable(lambda: Tokenizer(tokenizer_config), device, "tokenizer")
        torch.manual_seed(ctx.loop.seed)
        self.tokenizer = Tokenizer(tokenizer_config).to(device)
        self.wrapped = (
            wrap_model(self.tokenizer, ctx.dist, ctx.loop.wrap) if ctx.dist.is_distributed else self.tokenizer
        )
        self.optimizer = build_optimizer(
            self.tokenizer, ctx.loop.base_lr, ctx.loop.batch_size, weight_decay=ctx.loop.weight_decay, betas=(0.5, 0.9)
        )
        self.discriminator = self.disc_optimizer = None
        if self.config.gan_weight > 0:
            self.discriminator = PatchDiscriminator(tokenizer_config.image_channels, num_layers=2).to(device)
            self.disc_optimizer = build_optimizer(
                self.discriminator, ctx.loop.base_lr, ctx.loop.batch_size, weight_decay=0.0, betas=(0.5, 0.9)
            )
            self.disc_wrapped = (
                wrap_model(self.discriminator, ctx.dist, ctx.loop.wrap)
                if ctx.dist.is_distributed
                else self.discriminator
            )
        self.perceptual = None
        if self.config.perceptual_weight > 0:
            if self.config.perceptual_weights is None:
                raise UsageError("--perceptual-weight needs --perceptual-weights (a local VGG16 state dict)")
            self.perceptual = PerceptualLoss(self.config.perceptual_weights).to(device)
        K, V = tokenizer_config.schedule.num_scales, tokenizer_config.vocab_size
        self.hit_counts_KV = torch.zeros(K, V, device=device)  # decayed code hits per scale (see the module doc)
        self.assigned_at_V = torch.zeros(V, dtype=torch.long, device=device)  # steps done when it got its vector
        self.ema = EMA(self.tokenizer, ctx.loop.ema_decay) if ctx.loop.ema_decay > 0 else None
        n = sum(p.numel() for p in self.tokenizer.parameters())
        logger.info(
            "tokenizer %s: %.2fM parameters, %d px, scales %s",
            self.config.preset,
            n / 1e6,
            tokenizer_config.image_size,
            tokenizer_config.patch_nums,
        )

    def optimizers(self):
        out = {"tokenizer": self.optimizer}
        if self.disc_optimizer is not None:
            out["discriminator"] = self.disc_optimizer
        return out

    def trained_modules(self):
        modules = {"tokenizer": self.tokenizer}
        if self.discriminator is not None:
            modules["discriminator"] = self.discriminator
        return modules

    def state_tensors(self):
        usage = {"hit_counts_KV": self.hit_counts_KV, "assigned_at_V": self.assigned_at_V}
        tensors = {"tokenizer": full_state_dict(self.wrapped), "usage": usage}
        if self.discriminator is not None:
            tensors["discriminator"] = self.discriminator.state_dict()
        if self.ema is not None:
            tensors["ema"] = self.ema.state_dict()
        return tensors

    def load_state_tensors(self, tensors):
        load_full_state_dict(self.tokenizer, tensors["tokenizer"])
        usage = tensors["usage"]
        if "hit_counts_KV" in usage:
            self.hit_counts_KV.copy_(usage["hit_counts_KV"])
            self.assigned_at_V.copy_(usage["assigned_at_V"])
        else:  # a checkpoint from before usage was counted: its statistics started from uniform, not from data
            logger.warning("this checkpoint's codebook-usage statistics are of an older kind; counting afresh")
        if self.discriminator is not None:
            self.discriminator.load_state_dict(tensors["discriminator"])
        if self.ema is not None:
            if "ema" in tensors:
                self.ema.load_state_dict(tensors["ema"])
            else:  # EMA switched on for a run that had none: start it from the resumed weights
                self.ema = EMA(self.tokenizer, self.ctx.loop.ema_decay)

    def settings(self):
        return {**asdict(self.config), "data": asdict(self.data)}

    def config_dict(self):
        return {**self.settings(), "tokenizer_config": self.tokenizer.config.to_dict()}

    # ---- step -------------------------------------------------------------------------------------------------------

    def _images(self, keys: list) -> torch.Tensor:
        return torch.stack([self.dataset[k][0] for k in keys]).to(self.ctx.dist.device)

    def train_step(self, step: int, keys: list) -> dict[str, float]:
        ctx, cfg = self.ctx, self.config
        self.tokenizer.train()
        use_gan = self.discriminator is not None and step >= cfg.gan_start_step
        micro = ctx.micro_batches(keys)
        sums: dict[str, float] = {}
        hits_KV = torch.zeros_like(self.hit_counts_KV)
        restart_now = bool(cfg.dead_code_every) and (step + 1) % cfg.dead_code_every == 0
        pool = []  # residual vectors for dead-code restarts, gathered only on the steps that restart
        fakes, reals = [], []
        for i, micro_keys in enumerate(micro):
            images = self._images(micro_keys)
            # the generator's loss flows through the discriminator to the reconstruction, but must not train it
            discriminator_frozen = frozen(self.discriminator) if use_gan else nullcontext()
            with ctx.sync_context(self.wrapped, i == len(micro) - 1), ctx.autocast(), discriminator_frozen:
                out = self.wrapped(images)
                rec = out.reconstruction.float()
                rec_loss = cfg.l1_weight * (rec - images).abs().mean() + cfg.l2_weight * F.mse_loss(rec, images)
                if self.perceptual is not None:
                    rec_loss = rec_loss + cfg.perceptual_weight * self.perceptual(rec, images)
                loss = rec_loss + cfg.vq_weight * out.vq_loss
                parts = {"rec_loss": rec_loss.detach(), "vq_loss": out.vq_loss.detach()}
                if use_gan:
                    g_loss = generator_adversarial_loss(self.discriminator(rec))
                    weight = cfg.gan_weight
                    if cfg.adaptive_gan_weight:
                        last = self.tokenizer.decoder.conv_out.weight
                        weight = weight * adaptive_gan_weight(rec_loss, g_loss, last)
                    loss = loss + weight * g_loss
                    parts["gan_g_loss"] = g_loss.detach()
                ctx.backward(loss)
            parts["loss"] = loss.detach()
            parts["psnr"] = psnr(rec.detach(), images).mean()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value) / len(micro)
            for k, idx in enumerate(out.token_maps):
                hits_KV[k] += torch.bincount(idx.flatten(), minlength=hits_KV.shape[1]).float()
            if restart_now:
                pool += [z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) for z in out.residuals]
            if use_gan:
                fakes.append(rec.detach())
                reals.append(images)
        grad_norm = ctx.clip_and_step(self.optimizer, self.tokenizer.parameters())
        if self.ema is not None:
            self.ema.update(self.tokenizer)
        if use_gan:
            sums["gan_d_loss"] = self._discriminator_step(reals, fakes)
        hits_KV = sum_over_processes({"hits": hits_KV})["hits"]
        self.hit_counts_KV.mul_(USAGE_DECAY).add_(hits_KV)
        # not after a refused (non-finite) update: the pool would put NaN codes into the codebook
        if restart_now and math.isfinite(grad_norm):
            sums["codes_restarted"] = float(self.restart_dead_codes(step, torch.cat(pool)))
        sums["grad_norm"] = grad_norm
        sums.update(self.usage_metrics())
        return sums

    def _discriminator_step(self, reals, fakes) -> float:
        """One hinge step of the discriminator on real images and detached reconstructions, from cleared gradients.
        Real and fake go through one forward (GroupNorm normalises each image alone, so this equals two passes), which
        keeps a DDP-wrapped discriminator at one forward per backward."""
        ctx = self.ctx
        self.discriminator.train()
        self.disc_optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for i, (real, fake) in enumerate(zip(reals, fakes)):
            with ctx.sync_context(self.disc_wrapped, i == len(reals) - 1), ctx.autocast():
                real_logits, fake_logits = self.disc_wrapped(torch.cat([real, fake])).float().split(len(real))
                d_loss = hinge_discriminator_loss(real_logits, fake_logits)
                ctx.backward(d_loss)
            total += float(d_loss.detach()) / len(reals)
        ctx.clip_and_step(self.disc_optimizer, self.discriminator.parameters())
        return total

    def usage_rates_KV(self) -> torch.Tensor:
        """Each code's share of each scale's recent tokens (decayed counts / their total; 0 before any step)."""
        return self.hit_counts_KV / self.hit_counts_KV.sum(1, keepdim=True).clamp_min(1e-12)

    def usage_metrics(self) -> dict[str, float]:
        """Per scale: % of the codebook whose recent hit rate is above 1% of uniform (1/V)."""
        V = self.hit_counts_KV.shape[1]
        used_K = (self.usage_rates_KV() > USED_FRACTION_OF_UNIFORM / V).float().mean(1) * 100
        sides = self.tokenizer.config.patch_nums
        return {f"usage_{s}x{s}": float(u) for s, u in zip(sides, used_K)} | {"usage_all": float(used_K.mean())}

    @torch.no_grad()
    def restart_dead_codes(self, step: int, pool_NC: torch.Tensor) -> int:
        """Move codes whose hit rate (summed over scales) is below `dead_code_threshold` × uniform, among those that
        have held their vector for `dead_code_grace_steps`, onto residual vectors of this batch; reset their Adam
        moments, hit counts and EMA rows. The decision is the same on every rank (counts are summed over
        processes); rank 0 draws the new vectors and broadcasts them, so replicas stay equal."""
        K, V = self.hit_counts_KV.shape
        rarely_hit_V = self.usage_rates_KV().sum(0) < self.config.dead_code_threshold * K / V
        steps_done = step + 1
        out_of_grace_V = steps_done - self.assigned_at_V >= self.config.dead_code_grace_steps
        dead_V = rarely_hit_V & out_of_grace_V
        count = int(dead_V.sum())
        if count == 0:
            return 0
        codebook = self.tokenizer.quantizer.codebook.weight
        generator = self.ctx.step_generator(step, RESTART_STREAM)
        picks = torch.randint(len(pool_NC), (count,), generator=generator).to(pool_NC.device)
        new_rows = pool_NC[picks].float() + 1e-3 * torch.randn(count, pool_NC.shape[1], generator=generator).to(
            pool_NC.device
        )
        dead_idx = dead_V.nonzero().flatten()
        codebook.data[dead_idx] = new_rows.to(codebook.dtype)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(codebook.data, src=0)
        state = self.optimizer.state.get(codebook, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][dead_idx] = 0
        self.hit_counts_KV[:, dead_idx] = 0  # a new vector: its usage is counted from now on
        self.assigned_at_V[dead_idx] = steps_done
        if self.ema is not None:  # the averaged codebook takes the new vectors too, not a blend with the dead ones
            name = next(name for name, parameter in self.tokenizer.named_parameters() if parameter is codebook)
            self.ema.shadow[name][dead_idx] = codebook.data[dead_idx].float()
        return count

    # ---- evaluation ------------------------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Validation PSNR (dB), L1 and per-scale codebook usage (% of codes used at least once)."""
        ctx = self.ctx
        return evaluate_tokenizer(
            unwrap_model(self.wrapped), self.val_dataset, batch_size=ctx.per_rank_batch,
            limit=ctx.loop.eval_batches * ctx.loop.batch_size, rank=ctx.dist.rank, world_size=ctx.dist.world_size,
        )  # fmt: skip

    def export(self, directory: Path) -> None:
        state = full_state_dict(self.wrapped)  # a collective under FSDP; the plain state dict otherwise
        if not self.ctx.dist.is_main_process:
            return
        tokenizer = Tokenizer(self.tokenizer.config)
        tokenizer.load_state_dict(state)
        if self.ema is not None:  # the exported weights are the averaged ones, as the VAR task does
            self.ema.copy_to(tokenizer)
        metadata = {"classes": list(self.dataset.classes), "trained_with": self.config_dict()}
        save_pretrained(directory, tokenizer=tokenizer, metadata=metadata)
