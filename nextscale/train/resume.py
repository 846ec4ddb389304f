"""Resuming a run: which checkpoint a rerun continues from, and whether this run may continue it at all.

Rerunning the same command resumes from the newest intact checkpoint under `<output_dir>/checkpoints`. A rerun may
change how the run is watched and saved, its length, and what the divergence advice asks for (`RESUMABLE_CHANGES`);
any other setting that differs from the checkpoint's is refused with one line naming it, before anything is built
(`check_settings`) and again once the task has resolved its settings (`resume`). So is a checkpoint of another task
or of another data set, and a run asked for fewer steps than it has already trained.

Settings are compared field by field through nested config sections; a task's preset overrides (its
`whole_value_settings`, dicts whose keys are data, not fields) are compared whole.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from nextscale.data.seeding import derive_seed
from nextscale.distributed import DistributedContext
from nextscale.errors import UsageError
from nextscale.train.checkpoint import CONFIG_FILE, STATE_FILE, Checkpoint, CheckpointManager, restore_rng_state
from nextscale.train.distributed import load_optimizer_state
from nextscale.train.task import Task
from nextscale.weights import CheckpointError

logger = logging.getLogger(__name__)

# settings a resumed run may change: how it is watched and saved, its length, and what divergence advice asks for
RESUMABLE_CHANGES = frozenset(
    f"loop.{name}"
    for name in ("output_dir", "steps", "epochs", "log_every", "eval_every", "eval_batches", "save_every",
                 "keep_last", "progress", "base_lr", "grad_clip", "precision")
)  # fmt: skip
RESUME_ADVICE = "use the same settings, another --out, or --restart to start over in this one"


def whole_values(task: Task) -> frozenset[str]:
    """Dotted names of the task's settings that are compared whole (see `Task.whole_value_settings`)."""
    return frozenset(f"{task.name}.{name}" for name in task.whole_value_settings)


def check_settings(checkpoints: CheckpointManager, task: Task, settings: dict, steps: int | None) -> None:
    """Refuse, before building anything, a rerun whose requested settings differ from the newest checkpoint's, or
    that asks for fewer `steps` than that checkpoint has trained (None: not known yet, `epochs` decides)."""
    latest = checkpoints.latest()
    if latest is None:
        return
    try:
        saved = json.loads((latest / CONFIG_FILE).read_text())
        state = json.loads((latest / STATE_FILE).read_text())
    except (OSError, ValueError):  # a damaged checkpoint: resuming sets it aside and checks the one it uses
        return
    refuse_differences(latest, settings, saved if isinstance(saved, dict) else {}, whole_values(task))
    if steps is not None and isinstance(state, dict) and isinstance(state.get("step"), int):
        refuse_fewer_steps(checkpoints.directory.parent, state["step"], steps)


def refuse_fewer_steps(output_dir: Path, trained: int, steps: int) -> None:
    """A run at step `trained` asked to train to `steps` < `trained` would only export its newest weights again."""
    if steps < trained:
        raise UsageError(
            f"the run in {output_dir} is already at step {trained}, past the {steps} steps asked for: ask for more "
            "steps to train it further, or use another --out or --restart to start over"
        )


def resume(
    task: Task, sampler, checkpoints: CheckpointManager, dist: DistributedContext, config: dict, dataset: dict
) -> dict[str, Any] | None:
    """Load the newest intact checkpoint into the task, its optimizers, the sampler and the generators; returns its
    run state (step, loss history, metrics lines ...), or None for a fresh run. A checkpoint of another task, of
    other settings, of another data set or past `config["loop"]["steps"]` is refused with one line saying so."""
    checkpoint = checkpoints.load_newest_intact(map_location=dist.device, check=whole_checkpoint_check(task))
    if checkpoint is None:
        return None
    _refuse_foreign(task, checkpoint, checkpoints, config, dataset)
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


def _refuse_foreign(
    task: Task, checkpoint: Checkpoint, checkpoints: CheckpointManager, config: dict, dataset: dict
) -> None:
    """Everything that makes `checkpoint` not this run's to continue, as one-line UsageErrors."""
    if checkpoint.state.get("task") not in (None, task.name):
        raise UsageError(
            f"{checkpoints.directory} holds {checkpoint.state.get('task')} checkpoints, not {task.name}: "
            f"{RESUME_ADVICE}"
        )
    refuse_differences(checkpoint.path, config, checkpoint.config, whole_values(task))
    saved_data = checkpoint.state.get("dataset")
    if saved_data is not None and saved_data != dataset:
        raise UsageError(
            f"the data set changed since {checkpoint.path} ({saved_data['images']} images then, "
            f"{dataset['images']} now, or other classes): {RESUME_ADVICE}"
        )
    missing = [name for name in task.optimizers() if name not in checkpoint.optimizer]
    if missing:
        raise UsageError(
            f"{checkpoint.path} has no state for the {', '.join(missing)} optimizer that this run trains: it was "
            "written with other settings; resume with those, or train into a new output directory"
        )
    refuse_fewer_steps(checkpoints.directory.parent, checkpoint.state["step"], config["loop"]["steps"])


def refuse_differences(path: Path, now: dict, then: dict, whole: frozenset[str] = frozenset()) -> None:
    """A UsageError naming the first setting (dotted) that differs and may not change on resume."""
    for name, (value, saved) in differences(now, then, whole).items():
        if name not in RESUMABLE_CHANGES:
            raise UsageError(f"{path} was written with {name} = {saved!r}, this run has {value!r}: {RESUME_ADVICE}")


def differences(
    now: dict, then: dict, whole: frozenset[str] = frozenset(), prefix: str = ""
) -> dict[str, tuple[Any, Any]]:
    """{dotted name: (this run's value, the checkpoint's)} of the settings that differ. Config sections (the loop,
    the task, nested configs) are compared field by field, and only the fields both have (a field added by a newer
    version of the library takes its default; a checkpoint without a config differs in nothing); the dicts named in
    `whole` are compared whole. Lists and tuples compare equal (JSON has no tuples); the number of processes may
    change."""
    out = {}
    for key in sorted(set(now) & set(then)):
        name = f"{prefix}{key}"
        a, b = now[key], then[key]
        if isinstance(a, dict) and isinstance(b, dict) and name not in whole:
            out.update(differences(a, b, whole, f"{name}."))
        elif _plain(a) != _plain(b) and name != "world_size":
            out[name] = (a, b)
    return out


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def whole_checkpoint_check(task: Task):
    """A check for `load_newest_intact`: a checkpoint this loop wrote and that was not cut short."""

    def check(checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        if not isinstance(state.get("step"), int) or not isinstance(state.get("sampler"), dict):
            raise CheckpointError(f"{checkpoint.path / 'state.json'} is damaged (no step or sampler position)")
        if task.optimizers() and not isinstance(checkpoint.optimizer, dict):
            raise CheckpointError(f"{checkpoint.path} is damaged (no optimizer.pt)")

    return check
