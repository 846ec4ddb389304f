"""One training loop for both stages; the tokenizer and the transformer plug in a `Task` (task.py).

The loop owns what every run needs: distributed setup, the resumable sampler, the lr/wd schedule, logging, progress
bars, periodic evaluation, atomic checkpoints with automatic resume (resume.py), and the final export; its settings
are a `LoopConfig` (config.py, re-exported here). A task owns its models, optimizers and the step itself.
Everything random is keyed by (seed, step, sample) or restored from the checkpoint, so a run killed at any point and
started again with the same command reaches the same weights bit for bit (CPU, fp32).

What can go wrong, and what happens:
- the newest checkpoint is damaged: resume from the newest intact one (the damaged one is renamed, never deleted);
- the loss becomes NaN/inf: `NonFiniteLossError`; checkpoints taken after the loss stopped being healthy are set
  aside, so rerunning (with a lower lr, clipping or fp32) resumes from the newest good one, or from scratch;
- Ctrl-C: `TrainingInterrupted`, one line saying where it stopped; rerunning the same command resumes;
- other settings than the checkpoint's, or fewer steps than it has trained: refused with one line (resume.py);
- the run fails before it saves a checkpoint: the output folder is left as it was (a new one is removed again);
- after a resume, metrics.jsonl is cut back to what it held at the checkpoint, so no step is logged twice.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nextscale.data.sampler import ResumableDistributedSampler
from nextscale.data.seeding import derive_seed
from nextscale.distributed import DistributedContext, reduce_metrics, setup_distributed
from nextscale.errors import UsageError
from nextscale.progress import progress_bar
from nextscale.train.checkpoint import GOOD_STATE_KEY, CheckpointManager, capture_rng_state
from nextscale.train.config import LoopConfig
from nextscale.train.distributed import optimizer_state
from nextscale.train.divergence import EXPLOSION_FACTOR, LossMonitor, NonFiniteLossError, diverged
from nextscale.train.metrics import MetricLogger, ThroughputMeter, configure_logging, format_eta
from nextscale.train.precision import PRECISION_CHOICES, resolve_precision
from nextscale.train.resume import check_settings, resume
from nextscale.train.run_folder import RunFolder, restart_run
from nextscale.train.schedule import apply_schedule
from nextscale.train.task import StepContext, Task

logger = logging.getLogger(__name__)

__all__ = [
    "PRECISION_CHOICES", "LoopConfig", "NonFiniteLossError", "StepContext", "Task", "TrainingInterrupted",
    "resolve_precision", "restart_run", "run",
]  # fmt: skip


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
    saved: int = 0  # checkpoints this invocation has saved


def run(task: Task, config: LoopConfig) -> Path:
    """Train `task` to `config.steps`, resuming from the newest intact checkpoint under `output_dir/checkpoints` if
    any. Returns the export directory `output_dir/model`. Raises NonFiniteLossError when the loss diverges,
    TrainingInterrupted on Ctrl-C, and UsageError (one line) for a run it refuses; a run that fails before saving a
    checkpoint leaves `output_dir` as it found it."""
    dist = setup_distributed()
    if config.batch_size % (dist.world_size * config.grad_accumulation):
        raise UsageError(
            f"batch_size {config.batch_size} must be divisible by processes × accumulation "
            f"({dist.world_size} × {config.grad_accumulation})"
        )
    output_dir = Path(config.output_dir)
    folder = RunFolder(output_dir) if dist.is_main_process else None
    if dist.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(dist.is_main_process, output_dir / "train.log" if dist.is_main_process else None)
    checkpoints = CheckpointManager(output_dir / "checkpoints", config.keep_last, dist.is_main_process)
    progress = _Progress()
    try:
        settings = {"loop": asdict(config), task.name: task.settings()}
        check_settings(checkpoints, task, settings, config.steps if config.epochs is None else None)  # before any work
        return _Run(task, config, dist, checkpoints, progress).train()
    except BaseException as err:
        if folder is not None and progress.saved == 0:
            configure_logging(dist.is_main_process)  # closes train.log, which goes back to what it held
            folder.restore()
        if isinstance(err, KeyboardInterrupt):
            raise TrainingInterrupted(progress.step, checkpoints.latest()) from None
        raise


class _Run:
    """One run of the loop once the task is set up: resume, steps (loss watch, logging, evaluation, checkpoints),
    the final evaluation and the export."""

    def __init__(
        self, task: Task, config: LoopConfig, dist: DistributedContext, checkpoints: CheckpointManager, progress
    ):
        self.task, self.dist, self.checkpoints, self.progress = task, dist, checkpoints, progress
        step_context = StepContext(config, dist)
        task.setup(step_context)  # seeds the initial weights itself, identically on every rank
        self.config = step_context.loop = config.resolved(len(task.dataset), dist.device)
        _seed_process(derive_seed(self.config.seed, dist.rank))  # drop path and other in-model randomness, per rank
        self.sampler = ResumableDistributedSampler(
            len(task.dataset), step_context.per_rank_batch, world_size=dist.world_size, rank=dist.rank,
            seed=self.config.seed,
        )  # fmt: skip
        self.full_config = {"loop": asdict(self.config), task.name: task.config_dict(), "world_size": dist.world_size}
        self.dataset = {"images": len(task.dataset), "classes": list(getattr(task.dataset, "classes", []))}
        self.losses = LossMonitor()
        self.metrics_log = MetricLogger(self.config.output_dir, enabled=dist.is_main_process)
        self.throughput = ThroughputMeter()

    def train(self) -> Path:
        config, start = self.config, self._resume()
        batches = iter(self.sampler)
        bar = progress_bar(
            total=config.steps, initial=start, description=f"train {self.task.name}",
            enabled=self.dist.is_main_process and config.progress,
        )  # fmt: skip
        last = time.perf_counter()
        try:
            for step in range(start + 1, config.steps + 1):  # 1-based, as in metrics.jsonl and checkpoint names
                self.progress.step = step
                metrics, lr, wd = self._step(step, next(batches))
                now = time.perf_counter()
                images_per_second = self.throughput.update(config.batch_size, now - last)
                last = now
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps:
                    self._log(step, metrics, lr, wd, images_per_second, bar)
                self._evaluate_and_save(step)
            self._final_evaluation()
        finally:
            bar.close()
            self.metrics_log.close()
        return self._export()

    def _resume(self) -> int:
        """Continue from the newest intact checkpoint, if any; returns the steps it had trained."""
        state = resume(self.task, self.sampler, self.checkpoints, self.dist, self.full_config, self.dataset) or {}
        self.progress.step = start = int(state.get("step", 0))
        self.losses.load_state_dict(state.get("losses", {}))
        # lines logged after the checkpoint would be logged again; a checkpoint from before this was recorded keeps all
        self.metrics_log.keep_first_lines(state.get("metrics_lines", sys.maxsize) if state else 0)
        return start

    def _step(self, step: int, keys: list) -> tuple[dict[str, float], float, float]:
        """Schedule, the task's step and the loss watch; returns the step's metrics, lr and weight decay."""
        lr, wd = 0.0, 0.0
        for optimizer in self.task.optimizers().values():
            lr, wd = apply_schedule(optimizer, step - 1, self.config.schedule)
        metrics = self.task.train_step(step - 1, keys)
        loss = float(metrics.get("loss", 0.0))
        was_healthy = self.losses.onset() is None
        if not self.losses.record(step, loss):
            if not math.isfinite(loss):
                raise diverged(
                    self.task.name, step, loss, self.losses, self.checkpoints, self.config, self.dist.is_main_process
                )
            if was_healthy:
                logger.warning(
                    "loss %.4g at step %d is over %g× the recent median %.4g; checkpoints are not counted as good "
                    "until it recovers",
                    loss, step, EXPLOSION_FACTOR + 1, self.losses.median(),
                )  # fmt: skip
        return metrics, lr, wd

    def _log(self, step: int, metrics: dict, lr: float, wd: float, images_per_second: float | None, bar) -> None:
        dist, config = self.dist, self.config
        metrics = reduce_metrics(metrics, dist.device) if dist.is_distributed else metrics
        metrics.update(lr=lr, weight_decay=wd, images_per_second=images_per_second or 0.0)
        if getattr(self.task.dataset, "skipped_files", 0):  # unreadable images, skipped (named in the log)
            metrics["skipped_files"] = float(self.task.dataset.skipped_files)
        eta = self.throughput.eta_seconds((config.steps - step) * config.batch_size)
        self.metrics_log.log(step, metrics)
        bar.set_postfix_str(_postfix(metrics) + f" eta {format_eta(eta)}")

    def _evaluate_and_save(self, step: int) -> None:
        config = self.config
        if config.eval_every and step % config.eval_every == 0 and step < config.steps:
            self.metrics_log.log(step, self.task.evaluate(), prefix="eval")
        if step % config.save_every == 0 or step == config.steps:
            self._save(step)

    def _save(self, step: int) -> None:
        task = self.task
        modules = task.trained_modules()
        optimizers = {name: optimizer_state(modules[name], opt) for name, opt in task.optimizers().items()}
        state = {
            "step": step,
            "sampler": self.sampler.state_dict(),
            "task": task.name,
            "dataset": self.dataset,
            GOOD_STATE_KEY: self.losses.is_good(),  # pruning keeps the newest good checkpoint
            "losses": self.losses.state_dict(),
            "metrics_lines": self.metrics_log.line_count,  # what metrics.jsonl is cut back to on resume
        }
        self.checkpoints.save(
            step, task.state_tensors(), optimizer_state=optimizers, state=state, config=self.full_config,
            rng_state=capture_rng_state(),
        )  # fmt: skip
        self.progress.saved += 1

    def _final_evaluation(self) -> None:
        self.progress.step = self.config.steps
        final_metrics = self.task.evaluate()
        self.metrics_log.log(self.config.steps, final_metrics, prefix="eval")
        if self.dist.is_main_process and final_metrics:
            logger.info("final evaluation: %s", _postfix(final_metrics, limit=None))

    def _export(self) -> Path:
        export_dir = Path(self.config.output_dir) / "model"
        self.task.export(export_dir)  # every rank: gathering sharded weights is a collective; the main process writes
        if self.dist.is_main_process:
            logger.info("model written to %s", export_dir)
        return export_dir


def _seed_process(seed: int) -> None:
    """Seed python `random`, numpy and torch, so that a fresh run's generator states (saved with every checkpoint)
    depend on the seed alone."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _postfix(metrics: dict[str, float], limit: int | None = 4) -> str:
    keys = [k for k in metrics if not k.startswith(("scale_", "usage_"))][:limit]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys)
