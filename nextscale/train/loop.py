"""One training loop for both stages; the tokenizer and the transformer plug in a `Task`.

The loop owns what every run needs: distributed setup, the resumable sampler, the lr/wd schedule, logging, progress
bars, periodic evaluation, atomic checkpoints with automatic resume, and the final export. A task owns its models,
optimizers and the step itself. Everything random is keyed by (seed, step, sample) or restored from the checkpoint,
so a run killed at any point and started again with the same command reaches the same weights bit for bit (CPU, fp32).

What can go wrong, and what happens:
- the newest checkpoint is damaged: resume from the newest intact one (the damaged one is renamed, never deleted);
- the loss becomes NaN/inf: `NonFiniteLossError`; checkpoints taken after the loss stopped being healthy are set
  aside, so rerunning (with a lower lr, clipping or fp32) resumes from the newest good one;
- Ctrl-C: `TrainingInterrupted`, one line saying where it stopped; rerunning the same command resumes;
- after a resume, metrics.jsonl is cut back to what it held at the checkpoint, so no step is logged twice.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nextscale.data.sampler import ResumableDistributedSampler
from nextscale.data.seeding import derive_seed
from nextscale.distributed import DistributedContext, reduce_metrics, setup_distributed
from nextscale.progress import progress_bar
from nextscale.train.checkpoint import (
    CONFIG_FILE,
    GOOD_STATE_KEY,
    Checkpoint,
    CheckpointManager,
    capture_rng_state,
    restore_rng_state,
)
from nextscale.train.distributed import load_optimizer_state, optimizer_state
from nextscale.train.divergence import EXPLOSION_FACTOR, LossMonitor
from nextscale.train.metrics import MetricLogger, ThroughputMeter, configure_logging, format_eta
from nextscale.train.schedule import ScheduleConfig, apply_schedule
from nextscale.weights import CheckpointError

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)
# settings a resumed run may change: how it is watched and saved, its length, and what divergence advice asks for
RESUMABLE_CHANGES = frozenset(
    f"loop.{name}"
    for name in ("output_dir", "steps", "epochs", "log_every", "eval_every", "eval_batches", "save_every",
                 "keep_last", "progress", "base_lr", "grad_clip", "precision")
)  # fmt: skip


@dataclass
class LoopConfig:
    """How a run trains, whatever it trains: length, batch, optimisation schedule, precision, logging, evaluation,
    checkpoints. Saved with every checkpoint; a resume with other settings (except those in RESUMABLE_CHANGES) is
    refused, naming the field. It holds no model or data settings (those are the task's)."""

    output_dir: str = "runs/var"
    steps: int = 2000  # optimizer steps (see epochs)
    epochs: float | None = None  # passes over the training data instead of steps: steps = epochs × images / batch
    batch_size: int = 64  # images per optimizer step: all processes and accumulation steps together
    grad_accumulation: int = 1
    base_lr: float = 1e-4  # per 256 images: lr = base_lr × batch_size / 256
    warmup_steps: int | None = None  # None → 2% of the run (the recipe's epochs/50)
    lr_schedule: str = "lin0"  # flat, then linear to final_lr_ratio (see train/schedule.py for the others)
    warmup_start_ratio: float = 0.005
    final_lr_ratio: float = 0.01
    weight_decay: float = 0.05
    final_weight_decay: float | None = None  # None keeps it constant; cosine towards it otherwise
    grad_clip: float = 2.0  # global grad-norm clip; ≤ 0 disables
    precision: str = "auto"  # auto (bf16 where the hardware multiplies in it, else fp32) | fp32 | bf16 | fp16 (CUDA)
    seed: int = 0
    log_every: int = 25
    eval_every: int = 500  # 0 disables periodic evaluation (the final one still runs)
    eval_batches: int = 10
    save_every: int = 500
    keep_last: int = 2
    ema_decay: float = 0.0  # 0 disables the EMA copy of the weights
    wrap: str = "ddp"  # ddp | fsdp | none (how the trained model is wrapped when distributed)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
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
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be ≥ 0 (0: only the final evaluation), got {self.eval_every}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

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
        return PRECISIONS[self.precision]


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" → "bf16" on GPUs that support it and CPUs with bf16 matrix units (AVX-512 BF16, AMX), else "fp32"
    (elsewhere bf16 is emulated and several times slower than fp32); other names are returned as they are."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        return "bf16" if any(flag in flags for flag in ("avx512_bf16", "amx_bf16")) else "fp32"
    return "fp32"


def restart_run(output_dir: str | Path) -> Path | None:
    """Move a previous run out of the way (checkpoints, logs, export) into <output_dir>/replaced-<time>/, so that
    the next run starts over; nothing is deleted. Returns that folder, or None when there was nothing to move."""
    output_dir = Path(output_dir)
    parts = [output_dir / name for name in ("checkpoints", "metrics.jsonl", "train.log", "tensorboard", "model")]
    parts = [part for part in parts if part.exists()]
    if not parts:
        return None
    aside = output_dir / time.strftime("replaced-%Y%m%d-%H%M%S")
    aside.mkdir(parents=True)
    for part in parts:
        part.rename(aside / part.name)
    return aside


class StepContext:
    """What a task's step needs from the loop: the micro-batches of this rank, autocast, accumulation, clipping."""

    def __init__(self, loop: LoopConfig, dist: DistributedContext):
        self.loop, self.dist = loop, dist
        self.scaler = (
            torch.amp.GradScaler("cuda", init_scale=2.0**11, growth_interval=1000)
            if (loop.precision == "fp16" and dist.device.type == "cuda")
            else None
        )

    @property
    def per_rank_batch(self) -> int:
        return self.loop.batch_size // self.dist.world_size

    def autocast(self):
        dtype = self.loop.autocast_dtype
        if dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.dist.device.type, dtype=dtype)

    def micro_batches(self, keys: list) -> list[list]:
        size = len(keys) // self.loop.grad_accumulation
        return [keys[i * size : (i + 1) * size] for i in range(self.loop.grad_accumulation)]

    def sync_context(self, module: nn.Module, last_micro: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch."""
        if not last_micro and hasattr(module, "no_sync"):
            return module.no_sync()
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss = loss / self.loop.grad_accumulation
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip_and_step(self, optimizer: torch.optim.Optimizer, parameters) -> float:
        """Unscale, clip to `grad_clip`, step; returns the pre-clip global grad norm (NaN/inf is reported, the step
        is skipped by the scaler in fp16 and refused otherwise)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        parameters = [p for p in parameters if p.grad is not None]
        clip = self.loop.grad_clip if self.loop.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(parameters, clip).item()
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
            if self.scaler.get_scale() > 32768.0:  # the recipe caps the fp16 loss scale
                self.scaler.update(32768.0)
        elif math.isfinite(norm):  # the same norm on every rank: all of them skip together
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def step_generator(self, step: int, purpose: int) -> torch.Generator:
        """A generator keyed by (seed, step, purpose), identical on every rank."""
        return torch.Generator().manual_seed(derive_seed(self.loop.seed, step, purpose))


class Task:
    """Interface of a training stage. Subclasses set `name`, build their modules in `setup` and implement the rest."""

    name = "task"
    dataset: Any  # train split: indexable by SampleKey, with len and classes

    def setup(self, step_context: StepContext) -> None:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def trained_modules(self) -> dict[str, nn.Module]:
        """The module each optimizer of `optimizers()` trains, under the same name."""
        raise NotImplementedError

    def state_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """Weights to checkpoint, by file stem."""
        raise NotImplementedError

    def load_state_tensors(self, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        raise NotImplementedError

    def train_step(self, step: int, keys: list) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def export(self, directory: Path) -> None:
        """Write the trained model(s) in the library's own format (loadable by from_pretrained / nextscale sample).
        Called on every process; only the main process writes."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The task's settings as requested (before `setup`); a resume must match them."""
        return {}

    def config_dict(self) -> dict[str, Any]:
        """The settings once resolved by `setup` (presets expanded, sizes known): saved with every checkpoint."""
        return self.settings()


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite at `step`. Checkpoints taken after the loss stopped being healthy were renamed
    `diverged-step_*`, so a rerun resumes from `good_checkpoint` (None: from the start). The message is one line."""

    def __init__(self, message: str, step: int, good_checkpoint: Path | None):
        super().__init__(message)
        self.step, self.good_checkpoint = step, good_checkpoint


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training at `step` (the step in progress, 1-based). `str()` is the line to show:
    "interrupted at step N; rerun the same command to resume (...)". The CLI should print it alone and exit with
    status 130 (128 + SIGINT, what shells report for an interrupted command).

    It is a KeyboardInterrupt, so code that catches Exception (a retry loop, a notebook's error handling) does not
    swallow the user's request to stop, and callers that handle KeyboardInterrupt keep working unchanged."""

    def __init__(self, step: int, checkpoint: Path | None):
        where = f"from {checkpoint.name}" if checkpoint is not None else "from the start: no checkpoint yet"
        super().__init__(f"interrupted at step {step}; rerun the same command to resume ({where})")
        self.step, self.checkpoint = step, checkpoint

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class _Progress:
    step: int = 0  # the step being worked on, 1-based; before the first step of a resumed run, the step resumed at


def run(task: Task, config: LoopConfig) -> Path:
    """Train `task` to `config.steps`, resuming from the newest intact checkpoint under `output_dir/checkpoints` if
    any. Returns the export directory `output_dir/model`. Raises NonFiniteLossError when the loss diverges and
    TrainingInterrupted on Ctrl-C."""
    dist = setup_distributed()
    output_dir = Path(config.output_dir)
    if dist.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(dist.is_main_process, output_dir / "train.log" if dist.is_main_process else None)
    if config.batch_size % (dist.world_size * config.grad_accumulation):
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by processes × accumulation "
            f"({dist.world_size} × {config.grad_accumulation})"
        )
    checkpoints = CheckpointManager(output_dir / "checkpoints", config.keep_last, dist.is_main_process)
    _check_settings(checkpoints, {"loop": asdict(config), task.name: task.settings()})  # before any work
    progress = _Progress()
    try:
        return _run(task, config, dist, checkpoints, progress)
    except KeyboardInterrupt:
        raise TrainingInterrupted(progress.step, checkpoints.latest()) from None


def _run(
    task: Task, config: LoopConfig, dist: DistributedContext, checkpoints: CheckpointManager, progress: _Progress
) -> Path:
    output_dir = Path(config.output_dir)
    step_context = StepContext(config, dist)
    task.setup(step_context)  # seeds the initial weights itself, identically on every rank
    config = step_context.loop = config.resolved(len(task.dataset), dist.device)
    _seed_process(derive_seed(config.seed, dist.rank))  # drop path and other in-model randomness, per rank
    sampler = ResumableDistributedSampler(
        len(task.dataset), step_context.per_rank_batch, world_size=dist.world_size, rank=dist.rank, seed=config.seed
    )
    losses = LossMonitor()
    full_config = {"loop": asdict(config), task.name: task.config_dict(), "world_size": dist.world_size}
    dataset = {"images": len(task.dataset), "classes": list(getattr(task.dataset, "classes", []))}
    resumed_state = _resume(task, sampler, checkpoints, dist, full_config, dataset)
    start = int(resumed_state["step"]) if resumed_state else 0
    progress.step = start
    losses.load_state_dict(resumed_state.get("losses", {}) if resumed_state else {})
    metrics_log = MetricLogger(output_dir, enabled=dist.is_main_process)
    # lines logged after the checkpoint would be logged again; a checkpoint from before this was recorded keeps all
    metrics_log.keep_first_lines(resumed_state.get("metrics_lines", sys.maxsize) if resumed_state else 0)
    schedule = config.schedule
    throughput = ThroughputMeter()
    batches = iter(sampler)
    bar = progress_bar(
        total=config.steps,
        initial=start,
        description=f"train {task.name}",
        enabled=dist.is_main_process and config.progress,
    )
    last = time.perf_counter()
    try:
        for step in range(start, config.steps):
            progress.step = step + 1  # steps counted from 1, as in metrics.jsonl and checkpoint names
            lr, wd = 0.0, 0.0
            for optimizer in task.optimizers().values():
                lr, wd = apply_schedule(optimizer, step, schedule)
            metrics = task.train_step(step, next(batches))
            loss = float(metrics.get("loss", 0.0))
            was_healthy = losses.onset() is None
            if not losses.record(step + 1, loss):
                if not math.isfinite(loss):
                    raise _diverged(task.name, step + 1, loss, losses, checkpoints, config, dist)
                if was_healthy:
                    logger.warning(
                        "loss %.4g at step %d is over %g× the recent median %.4g; checkpoints are not counted as "
                        "good until it recovers",
                        loss, step + 1, EXPLOSION_FACTOR + 1, losses.median(),
                    )  # fmt: skip
            now = time.perf_counter()
            images_per_second = throughput.update(config.batch_size, now - last)
            last = now
            bar.update(1)
            if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
                metrics = reduce_metrics(metrics, dist.device) if dist.is_distributed else metrics
                metrics.update(lr=lr, weight_decay=wd, images_per_second=images_per_second or 0.0)
                if getattr(task.dataset, "skipped_files", 0):  # unreadable images, skipped (named in the log)
                    metrics["skipped_files"] = float(task.dataset.skipped_files)
                eta = throughput.eta_seconds((config.steps - step - 1) * config.batch_size)
                metrics_log.log(step + 1, metrics)
                bar.set_postfix_str(_postfix(metrics) + f" eta {format_eta(eta)}")
            if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
                metrics_log.log(step + 1, task.evaluate(), prefix="eval")
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                run_state = {
                    "dataset": dataset,
                    GOOD_STATE_KEY: losses.is_good(),  # pruning keeps the newest good checkpoint
                    "losses": losses.state_dict(),
                    "metrics_lines": metrics_log.line_count,  # what metrics.jsonl is cut back to on resume
                }
                _save(task, sampler, checkpoints, step + 1, full_config, run_state)
        progress.step = config.steps
        if config.steps > 0:
            final_metrics = task.evaluate()
            metrics_log.log(config.steps, final_metrics, prefix="eval")
            if dist.is_main_process and final_metrics:
                logger.info("final evaluation: %s", _postfix(final_metrics, limit=None))
    finally:
        bar.close()
        metrics_log.close()
    export_dir = output_dir / "model"
    task.export(export_dir)  # every rank: gathering sharded weights is a collective; the main process writes
    if dist.is_main_process:
        logger.info("model written to %s", export_dir)
    return export_dir


def _diverged(
    task_name: str,
    step: int,
    loss: float,
    losses: LossMonitor,
    checkpoints: CheckpointManager,
    config: LoopConfig,
    dist: DistributedContext,
) -> NonFiniteLossError:
    """Set aside the checkpoints taken after the divergence began and say what a rerun starts from and what to
    change. The loss at step s is computed with the weights of checkpoint s - 1, so the newest checkpoint that can
    be trusted is at most `onset - 2`, and must itself have been saved while the loss was healthy."""
    onset = losses.onset() or step
    good, moved = None, []
    if dist.is_main_process:
        good = checkpoints.newest_good(max_step=onset - 2)
        moved = checkpoints.set_aside_after(_checkpoint_step(good))
    advice = [f"lower --base-lr (now {config.base_lr:g})"]
    advice.append(
        "enable --grad-clip (e.g. 1)" if config.grad_clip <= 0 else f"lower --grad-clip (now {config.grad_clip:g})"
    )
    if config.precision != "fp32":
        advice.append("train in fp32 (--precision fp32)")
    if not dist.is_main_process:  # only the main process looks at the checkpoints
        start = "resumes from the checkpoint the main process names"
    else:
        start = f"resumes from {good}" if good is not None else "starts from scratch"
    aside = f"; {len(moved)} later checkpoint(s) renamed diverged-step_*" if moved else ""
    return NonFiniteLossError(
        f"{task_name}: loss is {loss} at step {step} (diverging since step {onset}); stopped. A rerun {start}, "
        f"the newest checkpoint whose recent losses were finite and not exploding{aside}. "
        f"To avoid the same divergence: {', '.join(advice)}.",
        step,
        good,
    )


def _checkpoint_step(path: Path | None) -> int:
    return int(path.name.rsplit("_", 1)[1]) if path is not None else -1


def _seed_process(seed: int) -> None:
    """Seed python `random`, numpy and torch, so that a fresh run's generator states (saved with every checkpoint)
    depend on the seed alone."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _postfix(metrics: dict[str, float], limit: int | None = 4) -> str:
    keys = [k for k in metrics if not k.startswith(("scale_", "usage_"))][:limit]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys)


def _save(task: Task, sampler, checkpoints: CheckpointManager, step: int, config: dict, run_state: dict) -> None:
    modules = task.trained_modules()
    optimizers = {name: optimizer_state(modules[name], opt) for name, opt in task.optimizers().items()}
    checkpoints.save(
        step,
        task.state_tensors(),
        optimizer_state=optimizers,
        state={"step": step, "sampler": sampler.state_dict(), "task": task.name, **run_state},
        config=config,
        rng_state=capture_rng_state(),
    )


def _resume(
    task: Task, sampler, checkpoints: CheckpointManager, dist: DistributedContext, config: dict, dataset: dict
) -> dict[str, Any] | None:
    """Load the newest intact checkpoint into the task, its optimizers, the sampler and the generators; returns its
    run state (step, loss history, metrics lines ...), or None for a fresh run. A checkpoint of another task, of
    other settings or of another data set is refused with one line saying what differs."""
    checkpoint = checkpoints.load_newest_intact(map_location=dist.device, check=_whole_checkpoint_check(task))
    if checkpoint is None:
        return None
    if checkpoint.state.get("task") not in (None, task.name):
        raise ValueError(
            f"{checkpoints.directory} holds {checkpoint.state.get('task')} checkpoints, not {task.name}: "
            f"{RESUME_ADVICE}"
        )
    _refuse_differences(checkpoint.path, config, checkpoint.config)
    saved_data = checkpoint.state.get("dataset")
    if saved_data is not None and saved_data != dataset:
        raise ValueError(
            f"the data set changed since {checkpoint.path} ({saved_data['images']} images then, "
            f"{dataset['images']} now, or other classes): {RESUME_ADVICE}"
        )
    missing = [name for name in task.optimizers() if name not in checkpoint.optimizer]
    if missing:
        raise ValueError(
            f"{checkpoint.path} has no state for the {', '.join(missing)} optimizer that this run trains: it was "
            "written with other settings; resume with those, or train into a new output directory"
        )
    task.load_state_tensors(checkpoint.tensors)
    modules = task.trained_modules()
    for name, optimizer in task.optimizers().items():
        # the peak lr comes from this run's settings (a fresh optimizer's lr is its peak), not from the checkpoint,
        # so that a rerun with a lower --base-lr really is lower
        peak_lrs = [group.get("peak_lr", group["lr"]) for group in optimizer.param_groups]
        load_optimizer_state(modules[name], optimizer, checkpoint.optimizer[name])
        for group, peak_lr in zip(optimizer.param_groups, peak_lrs):
            group["peak_lr"] = peak_lr
    sampler.load_state_dict(checkpoint.state["sampler"])
    if checkpoint.rng is not None and dist.world_size == 1:
        restore_rng_state(checkpoint.rng)
    elif dist.world_size > 1:  # RNG states were captured on rank 0; give each rank its own stream again
        torch.manual_seed(derive_seed(checkpoint.state["step"], dist.rank, 0x5EED))
    logger.info("resumed from %s (step %d)", checkpoint.path, checkpoint.state["step"])
    return checkpoint.state


WHOLE_VALUES = frozenset({"var.model", "tokenizer.tokenizer"})  # override dicts: their keys are data, not fields
RESUME_ADVICE = "use the same settings, another --out, or --restart to start over in this one"


def _check_settings(checkpoints: CheckpointManager, settings: dict) -> None:
    """Refuse, before building anything, a rerun whose requested settings differ from the newest checkpoint's."""
    latest = checkpoints.latest()
    try:
        saved = json.loads((latest / CONFIG_FILE).read_text()) if latest is not None else {}
    except (OSError, ValueError):  # a damaged checkpoint: resuming sets it aside and checks the one it uses
        return
    _refuse_differences(latest, settings, saved if isinstance(saved, dict) else {})


def _refuse_differences(path: Path, now: dict, then: dict) -> None:
    for name, (value, saved) in _differences(now, then).items():
        if name not in RESUMABLE_CHANGES:
            raise ValueError(f"{path} was written with {name} = {saved!r}, this run has {value!r}: {RESUME_ADVICE}")


def _differences(now: dict, then: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted name: (this run's value, the checkpoint's)} of the settings that differ. Config sections (the loop,
    the task, nested configs) are compared field by field, and only the fields both have (a field added by a newer
    version of the library takes its default; a checkpoint without a config differs in nothing); the dicts of
    preset overrides (WHOLE_VALUES) are compared whole. Lists and tuples compare equal (JSON has no tuples); the
    number of processes may change."""
    out = {}
    for key in sorted(set(now) & set(then)):
        name = f"{prefix}{key}"
        a, b = now[key], then[key]
        if isinstance(a, dict) and isinstance(b, dict) and name not in WHOLE_VALUES:
            out.update(_differences(a, b, f"{name}."))
        elif _plain(a) != _plain(b) and name != "world_size":
            out[name] = (a, b)
    return out


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _whole_checkpoint_check(task: Task):
    """A check for `load_newest_intact`: a checkpoint this loop wrote and that was not cut short."""

    def check(checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        if not isinstance(state.get("step"), int) or not isinstance(state.get("sampler"), dict):
            raise CheckpointError(f"{checkpoint.path / 'state.json'} is damaged (no step or sampler position)")
        if task.optimizers() and not isinstance(checkpoint.optimizer, dict):
            raise CheckpointError(f"{checkpoint.path} is damaged (no optimizer.pt)")

    return check
