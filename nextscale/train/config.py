"""`LoopConfig`: how a run trains, whatever it trains. It lives apart from the loop (train/loop.py) and imports no
torch, so that the command line builds its options from it and answers --help before torch loads."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from nextscale.errors import UsageError
from nextscale.train.precision import PRECISION_CHOICES, autocast_dtype, resolve_precision
from nextscale.train.schedule import ScheduleConfig

if TYPE_CHECKING:  # annotations only
    import torch


@dataclass
class LoopConfig:
    """How a run trains, whatever it trains: length, batch, optimisation schedule, precision, logging, evaluation,
    checkpoints. Saved with every checkpoint; a resume with other settings (except those in RESUMABLE_CHANGES) is
    refused, naming the field. It holds no model or data settings (those are the task's)."""

    output_dir: str = "runs/var"  # run directory (checkpoints, logs, model/); rerun the same command to resume
    steps: int = 2000  # optimizer steps (see epochs)
    epochs: float | None = None  # passes over the training data instead of steps: steps = epochs × images / batch
    batch_size: int = 64  # images per optimizer step: all processes and accumulation steps together
    grad_accumulation: int = 1  # micro-batches per optimizer step (batch_size is split among them)
    base_lr: float = 1e-4  # per 256 images: lr = base_lr × batch_size / 256
    warmup_steps: int | None = None  # None → 2% of the run (the recipe's epochs/50)
    lr_schedule: str = "lin0"  # flat, then linear to final_lr_ratio (see train/schedule.py for the others)
    warmup_start_ratio: float = 0.005  # lr at the start of the warmup, as a fraction of the peak lr
    final_lr_ratio: float = 0.01  # lr at the end of the run, as a fraction of the peak lr
    weight_decay: float = 0.05  # AdamW weight decay (not on embeddings, biases and gains)
    final_weight_decay: float | None = None  # None keeps it constant; cosine towards it otherwise
    grad_clip: float = 2.0  # global grad-norm clip; ≤ 0 disables
    precision: str = "auto"  # auto (bf16 where the hardware multiplies in it, else fp32) | fp32 | bf16 | fp16 (CUDA)
    seed: int = 0  # seed of everything random in the run (weights, data order, augmentation)
    log_every: int = 25  # steps between metric lines (console, TensorBoard, metrics.jsonl)
    eval_every: int = 500  # 0 disables periodic evaluation (the final one still runs)
    eval_batches: int = 10  # validation batches per evaluation
    save_every: int = 500  # steps between checkpoints
    keep_last: int = 2  # checkpoints kept (older ones are deleted)
    ema_decay: float = 0.0  # 0 disables the EMA copy of the weights
    wrap: str = "ddp"  # ddp | fsdp | none (how the trained model is wrapped when distributed)
    progress: bool = True  # progress bars (--no-progress hides them all)

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_CHOICES:
            raise UsageError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        for name in (
            "steps",
            "batch_size",
            "grad_accumulation",
            "log_every",
            "save_every",
            "eval_batches",
            "keep_last",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise UsageError(f"eval_every must be ≥ 0 (0: only the final evaluation), got {self.eval_every}")
        if self.epochs is not None and not self.epochs > 0:
            raise UsageError(f"epochs must be positive, got {self.epochs}")
        if not 0 <= self.ema_decay < 1:
            raise UsageError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def resolved(self, num_images: int, device: torch.device) -> LoopConfig:
        """This config with `epochs` turned into steps for a data set of `num_images`, and "auto" precision
        decided for `device`."""
        steps = self.steps if self.epochs is None else max(1, math.ceil(self.epochs * num_images / self.batch_size))
        return replace(self, steps=steps, precision=resolve_precision(self.precision, device))

    @property
    def schedule(self) -> ScheduleConfig:
        return ScheduleConfig(
            total_steps=self.steps,
            warmup_steps=self.warmup_steps,
            schedule=self.lr_schedule,
            warmup_start_ratio=self.warmup_start_ratio,
            final_lr_ratio=self.final_lr_ratio,
            weight_decay=self.weight_decay,
            final_weight_decay=self.final_weight_decay,
        )

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.precision)
