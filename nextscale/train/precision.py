"""The training precisions by name, without torch at import, so that the command line can offer them before torch
loads: each name's autocast dtype, and what "auto" becomes on a device (bf16 where the hardware multiplies in it,
fp32 elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    import torch

PRECISION_NAMES = ("fp32", "bf16", "fp16")  # fp16 trains with a gradient scaler, on CUDA
PRECISION_CHOICES = ("auto", *PRECISION_NAMES)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision name (None for fp32: no autocast)."""
    import torch  # deferred: this module is read by the command line before torch loads

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" → "bf16" on GPUs that support it and CPUs with bf16 matrix units (AVX-512 BF16, AMX), else "fp32"
    (elsewhere bf16 is emulated and several times slower than fp32); other names are returned as they are."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        import torch  # deferred: this module is read by the command line before torch loads

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        return "bf16" if any(flag in flags for flag in ("avx512_bf16", "amx_bf16")) else "fp32"
    return "fp32"
