"""Training a transformer on a frozen tokenizer's token maps: VAR (next-scale prediction, teacher forcing, every
token weighted 1/L) or the next-token raster baseline of the ablation (`architecture="raster"`, on a one-scale
tokenizer).

Letters: B batch, L all tokens, V vocabulary, K scales.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from nextscale.data.config import DataConfig
from nextscale.data.seeding import SampleKey
from nextscale.errors import UsageError
from nextscale.eval.metrics import evaluate_transformer
from nextscale.label_dropout import drop_labels
from nextscale.model.config import var_preset
from nextscale.model.cost import training_flops_per_image
from nextscale.model.raster import RasterTransformer, raster_preset
from nextscale.model.var import VAR, cross_entropy_per_token
from nextscale.pretrained import from_pretrained, read_metadata, save_pretrained
from nextscale.tokenizer.tokenizer import Tokenizer
from nextscale.train.distributed import (
    full_state_dict,
    is_sharded,
    load_full_state_dict,
    unwrap_model,
    wrap_model,
)
from nextscale.train.ema import EMA
from nextscale.train.memory import require_trainable
from nextscale.train.optim import build_optimizer
from nextscale.train.task import StepContext, Task
from nextscale.train.token_cache import TokenCache, is_deterministic
from nextscale.train.var_config import ARCHITECTURE_NAMES, VARTrainConfig

logger = logging.getLogger(__name__)

LABEL_DROPOUT_STREAM = 0xD7  # purpose id of the label-dropout generator


def teacher_forced_loss(
    model: nn.Module,
    tokenizer: Tokenizer,
    token_maps: list[torch.Tensor],
    labels_B: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    num_scales: int | None = None,
    newest_scale_weight: float = 1.0,
    autocast=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training objective on one batch, as the trainer computes it, and the metrics it logs.

    Teacher-forced logits from the tokenizer's f̂ of the true tokens; per-token cross-entropy (with
    `label_smoothing`), every token weighted 1/L as the official trainer does (in progressive training only the
    first `num_scales` scales count, and the newest of them is weighted `newest_scale_weight`); averaged over the
    batch. Metrics: L_mean / L_tail (plain cross-entropy, no smoothing, over all / the last trained scale) and
    acc_mean / acc_tail (top-1 %). `model` may be wrapped (DDP/FSDP); labels are used as given (dropout is the
    caller's)."""
    schedule = tokenizer.token_space.schedule
    num_scales = schedule.num_scales if num_scales is None else num_scales
    end, tail = schedule.offsets[num_scales], schedule.lengths[num_scales - 1]
    targets_BL = torch.cat([t.flatten(1) for t in token_maps], dim=1)[:, :end]
    teacher_BLC = tokenizer.teacher_input(token_maps, num_scales)
    with autocast if autocast is not None else torch.autocast(labels_B.device.type, enabled=False):
        logits_BLV = model(labels_B, teacher_BLC, num_scales=num_scales, drop_labels=False)
    ce_BL = cross_entropy_per_token(logits_BLV, targets_BL, label_smoothing)
    weight_L = torch.ones(end, device=ce_BL.device)
    weight_L[end - tail :] = newest_scale_weight
    loss = (ce_BL * weight_L).sum(1).div(weight_L.sum()).mean()
    return loss, _logged_metrics(logits_BLV, targets_BL, ce_BL, label_smoothing, tail)


def next_token_loss(
    model: nn.Module,
    token_maps: list[torch.Tensor],
    labels_B: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    autocast=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The raster baseline's objective: mean cross-entropy of every token of the one token map given the class and
    the tokens before it, and the same logged metrics as VAR's (L_tail = L_mean: there is one scale)."""
    targets_BL = token_maps[-1].flatten(1)
    with autocast if autocast is not None else torch.autocast(labels_B.device.type, enabled=False):
        logits_BLV = model(labels_B, targets_BL, drop_labels=False)
    ce_BL = cross_entropy_per_token(logits_BLV, targets_BL, label_smoothing)
    return ce_BL.mean(), _logged_metrics(logits_BLV, targets_BL, ce_BL, label_smoothing, targets_BL.shape[1])


def _logged_metrics(logits_BLV, targets_BL, ce_BL, label_smoothing: float, tail: int) -> dict[str, torch.Tensor]:
    """L_mean / L_tail: plain cross-entropy (no smoothing) over all / the last `tail` tokens; acc_*: top-1 %."""
    plain_BL = (ce_BL if label_smoothing == 0 else cross_entropy_per_token(logits_BLV, targets_BL)).detach()
    correct_BL = (logits_BLV.detach().argmax(-1) == targets_BL).float()
    return {
        "L_mean": plain_BL.mean(),
        "L_tail": plain_BL[:, -tail:].mean(),
        "acc_mean": correct_BL.mean() * 100,
        "acc_tail": correct_BL[:, -tail:].mean() * 100,
    }


# architecture name → (preset function, module class): what `architecture` builds
ARCHITECTURES = {"var": (var_preset, VAR), "raster": (raster_preset, RasterTransformer)}
assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES


class VARTask(Task):
    """Training a transformer (VAR, or the raster baseline) on the token maps of a frozen tokenizer: teacher-forced
    cross-entropy with label dropout keyed by (seed, step), optional progressive training over the scales, an
    optional EMA of the weights, and the tokens cached once when the images carry no random augmentation. Exports
    tokenizer and transformer together as one model directory."""

    name = "var"
    whole_value_settings = ("model",)  # the preset overrides: their keys are data, not fields

    def __init__(self, config: VARTrainConfig):
        self.config = config
        self.data = config.data or DataConfig()
        self._cumulative: list[int] = []

    # ---- setup ----------------------------------------------------------------------------------------------------

    def setup(self, ctx: StepContext) -> None:
        self.ctx = ctx
        device = ctx.dist.device
        tokenizer, _ = from_pretrained(self.config.tokenizer, device)
        if tokenizer is None:
            raise UsageError(f"{self.config.tokenizer} holds no tokenizer")
        self.tokenizer: Tokenizer = tokenizer.requires_grad_(False)
        self.dataset = self.data.build("train")
        self.val_dataset = self.data.build_validation()
        if self.data.image_size != tokenizer.config.image_size:
            raise UsageError(
                f"the data is {self.data.image_size} px but the tokenizer takes {tokenizer.config.image_size} px images"
            )
        if self.config.architecture not in ARCHITECTURES:
            raise UsageError(
                f"unknown architecture {self.config.architecture!r}; choose from {', '.join(ARCHITECTURES)}"
            )
        preset, module_class = ARCHITECTURES[self.config.architecture]
        model_config = preset(self.config.preset, **{**self.config.model, "num_classes": self.dataset.num_classes})
        require_trainable(lambda: module_class(model_config, tokenizer.token_space), device, "transformer")
        torch.manual_seed(ctx.loop.seed)  # same initial weights on every rank
        self.model = module_class(model_config, tokenizer.token_space).to(device)
        # wrap first: FSDP replaces the parameters with sharded ones, which the optimizer must hold
        self.wrapped = wrap_model(self.model, ctx.dist, ctx.loop.wrap) if ctx.dist.is_distributed else self.model
        self.optimizer = build_optimizer(
            self.model, ctx.loop.base_lr, ctx.loop.batch_size, weight_decay=ctx.loop.weight_decay
        )
        self.ema = EMA(self.model, ctx.loop.ema_decay) if ctx.loop.ema_decay > 0 else None
        self.cache = None
        if self.config.cache_tokens and is_deterministic(self.dataset):
            cache_dir = self.config.token_cache_dir or Path(ctx.loop.output_dir) / "token_cache"
            self.cache = TokenCache.build(self.tokenizer, self.dataset, Path(cache_dir), ctx)
        n = sum(p.numel() for p in self.model.parameters())
        logger.info(
            "transformer %s: %.2fM parameters, %d classes", self.config.preset, n / 1e6, model_config.num_classes
        )

    def optimizers(self):
        return {"model": self.optimizer}

    def trained_modules(self):
        return {"model": self.model}

    def state_tensors(self):
        tensors = {"model": full_state_dict(self.wrapped)}
        if self.ema is not None:
            tensors["ema"] = self.ema.state_dict()
        return tensors

    def load_state_tensors(self, tensors):
        load_full_state_dict(self.model, tensors["model"])
        if self.ema is not None and "ema" in tensors:
            self.ema.load_state_dict(tensors["ema"])

    def settings(self):
        return {**asdict(self.config), "data": asdict(self.data)}

    def config_dict(self):
        return {
            **self.settings(),
            "model_config": self.model.config.to_dict(),  # the resolved preset + overrides
            "token_space": self.tokenizer.token_space.to_dict(),
        }

    # ---- data -------------------------------------------------------------------------------------------------------

    def tokens_and_labels(self, keys: list) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The token maps and labels of training samples `keys`: from the token cache, or encoded now."""
        device = self.ctx.dist.device
        if self.cache is not None:
            indices = torch.tensor([k.index if isinstance(k, SampleKey) else int(k) for k in keys])
            tokens_BL, labels_B = self.cache.get(indices)
            return self.model.schedule.split(tokens_BL.to(device)), labels_B.to(device)
        images, labels = zip(*(self.dataset[k] for k in keys))
        images_BCHW = torch.stack(images).to(device)
        return self.tokenizer.encode(images_BCHW), torch.tensor(labels, device=device)

    def scales_at(self, step: int) -> tuple[int, float]:
        """Progressive training: (scales trained, weight of the newest scale's loss)."""
        K, fraction = self.model.schedule.num_scales, self.config.progressive
        if fraction <= 0 or self.config.architecture != "var":
            return K, 1.0
        end = max(int(self.ctx.loop.steps * fraction), 1)
        start = min(self.config.progressive_start_scales, K)
        if step >= end:
            return K, 1.0
        scales = start + round((K - start) * step / end)
        stage_length = max(end / max(K - start, 1), 1)
        ramp = min(max(((step % stage_length) + 1) / (stage_length / 3), 0.01), 1.0)
        return scales, ramp if scales > start else 1.0

    # ---- step -------------------------------------------------------------------------------------------------------

    def train_step(self, step: int, keys: list) -> dict[str, float]:
        ctx = self.ctx
        self.model.train()
        num_scales, newest_weight = self.scales_at(step)
        uniform = self.label_dropout_draws(step)
        micro = ctx.micro_batches(keys)
        sums: dict[str, torch.Tensor] = {}
        for i, micro_keys in enumerate(micro):
            token_maps, labels_B = self.tokens_and_labels(micro_keys)
            uniform_B = uniform[i * len(micro_keys) : (i + 1) * len(micro_keys)]
            labels_B = drop_labels(labels_B, self.model.config.label_dropout, self.model.config.null_class, uniform_B)
            with ctx.sync_context(self.wrapped, i == len(micro) - 1):
                if self.config.architecture == "raster":
                    loss, metrics = next_token_loss(
                        self.wrapped, token_maps, labels_B, label_smoothing=self.config.label_smoothing,
                        autocast=ctx.autocast(),
                    )  # fmt: skip
                else:
                    loss, metrics = teacher_forced_loss(
                        self.wrapped, self.tokenizer, token_maps, labels_B, label_smoothing=self.config.label_smoothing,
                        num_scales=num_scales, newest_scale_weight=newest_weight, autocast=ctx.autocast(),
                    )  # fmt: skip
                ctx.backward(loss)
            for name, value in {"loss": loss.detach(), **metrics}.items():
                sums[name] = sums.get(name, 0) + value / len(micro)
        grad_norm = ctx.clip_and_step(self.optimizer, self.model.parameters())
        if self.ema is not None:
            self.ema.update(self.model)
        out = {k: float(v) for k, v in sums.items()}
        out.update(grad_norm=grad_norm, scales=float(num_scales))
        if self.config.architecture == "var":  # cumulative training compute of the transformer, the scaling axis
            out["pflops"] = self.cumulative_flops(step) / 1e15
        return out

    def label_dropout_draws(self, step: int) -> torch.Tensor:
        """This rank's label-dropout draws for `step`, in the order of its keys: drawn for the whole global batch from
        a generator keyed by (seed, step), so that 1 process and N processes drop the same labels."""
        ctx = self.ctx
        global_uniform = torch.rand(ctx.loop.batch_size, generator=ctx.step_generator(step, LABEL_DROPOUT_STREAM))
        return global_uniform.view(ctx.dist.world_size, -1)[ctx.dist.rank]

    def cumulative_flops(self, step: int) -> float:
        """Training FLOPs of the transformer from the first step through `step` (0-based), counted from the
        architecture and schedule (`nextscale.model.cost`; progressive steps count only their scales)."""
        per_image = self._flops_per_image
        batch = self.ctx.loop.batch_size
        if self.config.progressive <= 0:
            return float((step + 1) * batch * per_image(self.model.schedule.num_scales))
        totals = self._cumulative  # prefix sums, extended as the run goes (and recomputed once after a resume)
        while len(totals) <= step:
            previous = totals[-1] if totals else 0
            totals.append(previous + batch * per_image(self.scales_at(len(totals))[0]))
        return float(totals[step])

    @functools.cache  # noqa: B019 (one task object per run)
    def _flops_per_image(self, num_scales: int) -> int:
        return training_flops_per_image(self.model.config, self.tokenizer.token_space, num_scales=num_scales)

    # ---- evaluation ------------------------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Validation L_mean, L_tail, acc_mean, acc_tail and per-scale loss/accuracy (labels kept, no dropout)."""
        ctx = self.ctx
        limit = ctx.loop.eval_batches * ctx.loop.batch_size
        return evaluate_transformer(
            unwrap_model(self.wrapped), self.tokenizer, self.val_dataset, batch_size=ctx.per_rank_batch, limit=limit,
            rank=ctx.dist.rank, world_size=ctx.dist.world_size, autocast_dtype=ctx.loop.autocast_dtype,
        )  # fmt: skip

    def export(self, directory: Path) -> None:
        model = unwrap_model(self.wrapped)
        if is_sharded(model):  # gather into a plain copy (a collective: every rank takes part)
            state, model = full_state_dict(self.wrapped), type(self.model)(self.model.config, self.model.token_space)
            if state:
                model.load_state_dict(state)
        if not self.ctx.dist.is_main_process:
            return
        if self.ema is not None:
            with self.ema.applied_to(model):
                self._export(directory, model)
        else:
            self._export(directory, model)

    def _export(self, directory: Path, model: nn.Module) -> None:
        metadata = read_metadata(self.config.tokenizer)
        metadata.update(classes=list(self.dataset.classes), trained_with=self.config_dict())
        save_pretrained(directory, tokenizer=self.tokenizer, model=model, metadata=metadata)


__all__ = ["ARCHITECTURES", "VARTask", "VARTrainConfig", "next_token_loss", "teacher_forced_loss"]
