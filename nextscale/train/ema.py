"""Exponential moving average of model weights, kept in fp32.

The official VAR training has no EMA; this is an option of this project (off unless the training config asks
for it). The shadow weights are keyed by the plain module's parameter names, so `state_dict()` can be saved as
`ema.safetensors` and loaded into a bare model with `load_state_dict(..., strict=False)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nextscale.errors import UsageError
from nextscale.train.distributed import unwrap_model


class EMA:
    """shadow <- decay * shadow + (1 - decay) * weight after every `update`, for every floating-point parameter."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, device: torch.device | str | None = None):
        if not 0.0 <= decay <= 1.0:
            raise UsageError(f"decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.num_updates = 0
        with torch.no_grad():
            self.shadow: dict[str, torch.Tensor] = {
                name: parameter.detach().to(device=device or parameter.device, dtype=torch.float32, copy=True)
                for name, parameter in self._parameters(model)
            }

    @staticmethod
    def _parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, parameter in unwrap_model(model).named_parameters():
            if parameter.is_floating_point():
                yield name, parameter

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """Move the shadow weights towards the current weights of `model` (call after optimizer.step())."""
        weight = 1.0 - (self.decay if decay is None else decay)
        for name, parameter in self._parameters(model):
            shadow = self.shadow[name]
            shadow.lerp_(parameter.detach().to(device=shadow.device, dtype=torch.float32), weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the parameters of `model` with the shadow weights (cast to each parameter's dtype)."""
        for name, parameter in self._parameters(model):
            parameter.copy_(self.shadow[name])

    @contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Evaluate with the EMA weights inside the block; the training weights come back afterwards."""
        with torch.no_grad():
            backup = {name: parameter.detach().clone() for name, parameter in self._parameters(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, parameter in self._parameters(model):
                    parameter.copy_(backup[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fp32 shadow weights by parameter name (the update count belongs in the run state)."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, torch.Tensor], num_updates: int | None = None) -> None:
        missing = self.shadow.keys() - state_dict.keys()
        unexpected = state_dict.keys() - self.shadow.keys()
        if missing or unexpected:
            raise KeyError(f"EMA state mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name, shadow in self.shadow.items():
            shadow.copy_(state_dict[name])
        if num_updates is not None:
            self.num_updates = num_updates
