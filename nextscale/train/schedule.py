"""Learning-rate and weight-decay schedules of the VAR recipe, evaluated every optimizer step.

The lr is `peak_lr * lr_multiplier(step, ...)`:
- warmup: linear from `warmup_start_ratio` at step 0 to 1 at `warmup_steps`;
- afterwards, with progress p = (step - warmup_steps) / (total_steps - 1 - warmup_steps) in [0, 1]:
  - `lin0` (default): 1 while p < 0.05, then linear down to `final_lr_ratio` at the last step;
  - `lin`: the same with a flat first 15%;
  - `lin00`: linear from 1 to `final_lr_ratio` right away;
  - `cos`: half a cosine from 1 to `final_lr_ratio`;
  - `exp`: 1 for the first 15%, then exponential decay to `final_lr_ratio`;
  - `lin<T>` (for example `lin0.8`, used with progressive training): two linear pieces meeting at p = T.
The weight decay follows half a cosine over the whole run from `weight_decay` to `final_weight_decay`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nextscale.errors import UsageError

if TYPE_CHECKING:  # only for annotations: LoopConfig builds a ScheduleConfig before torch is loaded
    import torch

NAMED_SCHEDULES = ("lin0", "lin", "lin00", "cos", "exp")
# Length of the flat start (as a fraction of the post-warmup steps) of the named linear / exponential schedules.
FLAT_FRACTION = {"lin0": 0.05, "lin": 0.15, "exp": 0.15}


def _two_slope_fraction(schedule: str) -> float | None:
    """T of a `lin<T>` schedule name, or None when `schedule` is not of that form."""
    if schedule in NAMED_SCHEDULES or not schedule.startswith("lin"):
        return None
    try:
        fraction = float(schedule[3:])
    except ValueError:
        return None
    return fraction if 0.0 < fraction < 1.0 else None


def check_schedule_name(schedule: str) -> None:
    if schedule not in NAMED_SCHEDULES and _two_slope_fraction(schedule) is None:
        raise UsageError(f"unknown lr schedule {schedule!r}: expected one of {NAMED_SCHEDULES} or lin<T> with 0<T<1")


def lr_multiplier(
    step: int,
    total_steps: int,
    warmup_steps: int,
    schedule: str = "lin0",
    warmup_start_ratio: float = 0.005,
    final_lr_ratio: float = 0.01,
) -> float:
    """The factor applied to the peak lr at `step` (0-based) of a run of `total_steps` optimizer steps.

    Steps past the end keep the final value (the progress is clamped to [0, 1]); inside the run the values are
    the official ones.
    """
    if step < warmup_steps:
        return warmup_start_ratio + (1.0 - warmup_start_ratio) * step / warmup_steps
    decay_steps = total_steps - 1 - warmup_steps
    progress = 1.0 if decay_steps <= 0 else min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)
    remaining = 1.0 - progress
    if schedule in ("lin0", "lin"):
        flat = FLAT_FRACTION[schedule]
        if progress < flat:
            return 1.0
        return final_lr_ratio + (1.0 - final_lr_ratio) * remaining / (1.0 - flat)
    if schedule == "lin00":
        return final_lr_ratio + (1.0 - final_lr_ratio) * remaining
    if schedule == "cos":
        return final_lr_ratio + (1.0 - final_lr_ratio) * (0.5 + 0.5 * math.cos(math.pi * progress))
    if schedule == "exp":
        flat = FLAT_FRACTION["exp"]
        if progress < flat:
            return 1.0
        return math.exp((progress - flat) / (1.0 - flat) * math.log(final_lr_ratio))
    fraction = _two_slope_fraction(schedule)
    if fraction is None:
        check_schedule_name(schedule)  # raises
        raise AssertionError("unreachable")
    # Two pieces meeting at p = T at the value halfway between 1 and where `lin00` would be at T.
    middle = (1.0 + final_lr_ratio + (1.0 - final_lr_ratio) * (1.0 - fraction)) / 2.0
    if progress < fraction:
        return 1.0 + (middle - 1.0) * progress / fraction
    return final_lr_ratio + (middle - final_lr_ratio) * remaining / (1.0 - fraction)


def weight_decay_at(step: int, total_steps: int, weight_decay: float, final_weight_decay: float) -> float:
    """Half a cosine from `weight_decay` at step 0 to `final_weight_decay` at the last step (total_steps - 1)."""
    progress = 1.0 if total_steps <= 1 else min(max(step / (total_steps - 1), 0.0), 1.0)
    return final_weight_decay + (weight_decay - final_weight_decay) * (0.5 + 0.5 * math.cos(math.pi * progress))


@dataclass
class ScheduleConfig:
    """How lr and weight decay change over a run; all counts are optimizer steps."""

    total_steps: int
    warmup_steps: int | None = None  # None: 2% of the run, the official default of epochs / 50 warmup epochs
    schedule: str = "lin0"  # lin0 | lin | lin00 | cos | exp | lin<T>
    warmup_start_ratio: float = 0.005  # lr multiplier at step 0
    final_lr_ratio: float = 0.01  # lr multiplier at the last step (the README uses 0.1 for d16/d20)
    weight_decay: float = 0.05  # at step 0
    final_weight_decay: float | None = None  # at the last step; None keeps it constant (0.08 for d30/d36)

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise UsageError(f"total_steps must be at least 1, got {self.total_steps}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < self.total_steps:
            raise UsageError(f"warmup_steps must be in [0, total_steps), got {self.warmup_steps}")
        check_schedule_name(self.schedule)
        if not 0.0 <= self.warmup_start_ratio <= 1.0:
            raise UsageError(f"warmup_start_ratio must be in [0, 1], got {self.warmup_start_ratio}")
        if not 0.0 < self.final_lr_ratio <= 1.0:
            raise UsageError(f"final_lr_ratio must be in (0, 1], got {self.final_lr_ratio}")
        if self.weight_decay < 0 or (self.final_weight_decay is not None and self.final_weight_decay < 0):
            raise UsageError("weight decay values must be non-negative")

    @property
    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(round(self.total_steps / 50), self.total_steps - 1)

    @property
    def resolved_final_weight_decay(self) -> float:
        return self.weight_decay if self.final_weight_decay is None else self.final_weight_decay

    def lr_multiplier(self, step: int) -> float:
        return lr_multiplier(
            step,
            self.total_steps,
            self.resolved_warmup_steps,
            self.schedule,
            self.warmup_start_ratio,
            self.final_lr_ratio,
        )

    def weight_decay_at(self, step: int) -> float:
        return weight_decay_at(step, self.total_steps, self.weight_decay, self.resolved_final_weight_decay)


def apply_schedule(optimizer: torch.optim.Optimizer, step: int, config: ScheduleConfig) -> tuple[float, float]:
    """Set every group's lr and weight decay for `step`; returns (largest lr, scheduled weight decay).

    A group's lr is its `peak_lr` (set by `build_optimizer`; the group's current lr is recorded as the peak on
    first use otherwise) times the multiplier. Its weight decay is the scheduled value times its
    `weight_decay_scale`; groups without that key decay only if they were created with a non-zero weight decay,
    so the no-decay group stays at 0.
    """
    multiplier = config.lr_multiplier(step)
    weight_decay = config.weight_decay_at(step)
    largest_lr = 0.0
    for group in optimizer.param_groups:
        peak_lr = group.setdefault("peak_lr", group["lr"])
        group["lr"] = peak_lr * multiplier
        largest_lr = max(largest_lr, group["lr"])
        scale = group.setdefault("weight_decay_scale", 1.0 if group["weight_decay"] > 0 else 0.0)
        group["weight_decay"] = weight_decay * scale
    return largest_lr, weight_decay
