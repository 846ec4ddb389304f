"""Refusing a model that cannot fit before any of it is allocated.

A mistyped size (`--width 10000000`) would otherwise end in the allocator's error, or in the machine swapping. The
model is first built on the meta device (shapes only, no memory), its parameters counted, and the memory that
training them needs compared with what the device has.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from nextscale.errors import UsageError

BYTES_PER_TRAINED_PARAMETER = 16  # fp32 weights and gradients, and AdamW's two moments


def device_memory(device: str | torch.device) -> int | None:
    """Total memory of `device` in bytes (RAM for the CPU); None when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None


def require_trainable(build: Callable[[], nn.Module], device: str | torch.device, what: str) -> int:
    """The parameter count of `build()`, built on the meta device; a UsageError when training it on `device` would
    need more memory than the device has."""
    with torch.device("meta"):
        module = build()
    count = sum(parameter.numel() for parameter in module.parameters())
    needed, available = count * BYTES_PER_TRAINED_PARAMETER, device_memory(device)
    if available is not None and needed > available:
        raise UsageError(
            f"the {what} would have {count:,} parameters: training it needs about {needed / 2**30:,.1f} GiB, more "
            f"than the {available / 2**30:,.1f} GiB of {torch.device(device)} (check its size settings)"
        )
    return count
