"""What a training stage plugs into the loop (`Task`), and what the loop hands its step (`StepContext`).

The loop (loop.py) owns everything every run needs; a task owns its models, optimizers and the step itself. The
step context gives the step this rank's micro-batches, autocast, gradient accumulation, clipping and generators keyed
by (seed, step), so that 1 process and N processes train the same weights.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nextscale.data.seeding import derive_seed
from nextscale.distributed import DistributedContext

if TYPE_CHECKING:
    from nextscale.train.config import LoopConfig


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

    name = "task"  # the section of the saved config holding the task's settings, and the progress bar's label
    # settings (dicts of preset overrides) compared whole on resume: their keys are data, not fields
    whole_value_settings: tuple[str, ...] = ()
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
