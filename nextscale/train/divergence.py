"""Watching the training loss for divergence, so that a run that blows up can say which checkpoint is still good.

Every step's loss is compared with the median of the last `WINDOW` healthy losses: a loss is *unhealthy* when it is
not finite or exceeds that median by more than `EXPLOSION_FACTOR` times its magnitude (judged once `MIN_HISTORY`
healthy losses are known). Unhealthy losses do not enter the median, so a slow blow-up cannot drag it along.

A checkpoint is *good* when the last `GOOD_SPAN` losses before it were healthy; `state_dict()` (saved in the
checkpoint's state.json) records that verdict with the loss history, so a resumed run judges exactly as an
uninterrupted one. When the loss becomes non-finite, `onset()` is the first step of the unhealthy stretch that ended
in it: the loss at step s is computed with the weights of checkpoint s - 1, so only checkpoints up to `onset() - 2`
are known to hold weights that gave a healthy loss. `diverged` then sets the later checkpoints aside and words the
`NonFiniteLossError`: what a rerun starts from and which settings to change.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nextscale.train.checkpoint import CheckpointManager

if TYPE_CHECKING:
    from nextscale.train.config import LoopConfig

WINDOW = 50  # healthy losses the median is taken over, and steps of history kept
EXPLOSION_FACTOR = 10.0  # unhealthy above median + factor·|median| (about 11× the median for a positive loss)
MIN_HISTORY = 5  # healthy losses needed before a finite loss can be judged exploding
GOOD_SPAN = 10  # a checkpoint is good when this many most recent losses were healthy


class LossMonitor:
    """Per-step losses → healthy or not; the verdict on a checkpoint taken now; where a divergence began."""

    def __init__(self) -> None:
        self.healthy_losses: deque[float] = deque(maxlen=WINDOW)
        self.recent: deque[tuple[int, float, bool]] = deque(maxlen=WINDOW)  # (step, loss, healthy)

    def median(self) -> float | None:
        return statistics.median(self.healthy_losses) if len(self.healthy_losses) >= MIN_HISTORY else None

    def record(self, step: int, loss: float) -> bool:
        """Record the loss of `step` (1-based); returns whether it is healthy."""
        median = self.median()
        healthy = math.isfinite(loss) and (median is None or loss - median <= EXPLOSION_FACTOR * abs(median))
        self.recent.append((step, loss, healthy))
        if healthy:
            self.healthy_losses.append(loss)
        return healthy

    def is_good(self) -> bool:
        """Whether a checkpoint taken now counts as good: its last GOOD_SPAN losses were healthy."""
        return all(healthy for _, _, healthy in list(self.recent)[-GOOD_SPAN:])

    def onset(self) -> int | None:
        """First step of the trailing run of unhealthy losses (None when the last loss was healthy)."""
        first = None
        for step, _, healthy in reversed(self.recent):
            if healthy:
                break
            first = step
        return first

    def state_dict(self) -> dict[str, Any]:
        """The history, JSON-ready (for a checkpoint's state.json)."""
        return {
            "healthy_losses": list(self.healthy_losses),
            "recent": [[step, loss, healthy] for step, loss, healthy in self.recent],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.healthy_losses = deque((float(x) for x in state.get("healthy_losses", [])), maxlen=WINDOW)
        self.recent = deque(
            ((int(step), float(loss), bool(healthy)) for step, loss, healthy in state.get("recent", [])), maxlen=WINDOW
        )


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite at `step`. Checkpoints taken after the loss stopped being healthy were renamed
    `diverged-step_*`, so a rerun resumes from `good_checkpoint` (None: from the start). The message is one line."""

    def __init__(self, message: str, step: int, good_checkpoint: Path | None):
        super().__init__(message)
        self.step, self.good_checkpoint = step, good_checkpoint


def diverged(
    task_name: str,
    step: int,
    loss: float,
    losses: LossMonitor,
    checkpoints: CheckpointManager,
    config: LoopConfig,
    is_main_process: bool,
) -> NonFiniteLossError:
    """Set aside the checkpoints taken after the divergence began and say what a rerun starts from and what to
    change. The loss at step s is computed with the weights of checkpoint s - 1, so the newest checkpoint that can
    be trusted is at most `onset - 2`, and must itself have been saved while the loss was healthy."""
    onset = losses.onset() or step
    good, moved = None, []
    if is_main_process:
        good = checkpoints.newest_good(max_step=onset - 2)
        moved = checkpoints.set_aside_after(_checkpoint_step(good))
    advice = [f"lower --base-lr (now {config.base_lr:g})"]
    advice.append(
        "enable --grad-clip (e.g. 1)" if config.grad_clip <= 0 else f"lower --grad-clip (now {config.grad_clip:g})"
    )
    if config.precision != "fp32":
        advice.append("train in fp32 (--precision fp32)")
    if not is_main_process:  # only the main process looks at the checkpoints
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
