"""The scale schedule: which token maps exist, where their tokens sit in the sequence, who may attend to whom.

VAR represents an image as K token maps r_1 … r_K of growing side `patch_nums[k]`. Every other part of the library
(quantizer, transformer, sampler, editing, training) asks this object about the schedule instead of recomputing it.

Shape letters used across the library: B batch, K scales, L all tokens of all scales, l one scale's tokens,
C transformer width, Cvae tokenizer latent channels, V vocabulary, h/w one scale's token grid, H/W the finest grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from nextscale.errors import UsageError

if TYPE_CHECKING:  # annotations only
    import torch

SCHEDULES: dict[str, tuple[int, ...]] = {
    "256": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    "512": (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),
    "1024": (1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64),
}


def parse_patch_nums(spec: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'256' / '1_2_3_4' / '1,2,3,4' / (1, 2, 3, 4) → (1, 2, 3, 4)."""
    if isinstance(spec, (tuple, list)):
        return tuple(int(p) for p in spec)
    if spec in SCHEDULES:
        return SCHEDULES[spec]
    try:
        return tuple(int(p) for p in spec.replace(",", "_").split("_") if p)
    except ValueError:
        raise UsageError(f"bad scale schedule {spec!r}: use {sorted(SCHEDULES)} or sizes like '1_2_3_4'") from None


def phi_index_map(num_scales: int, num_phis: int) -> tuple[int, ...]:
    """Which of `num_phis` φ convs serves each scale, exactly as the official quantizer picks it.

    The official code places φ k at tick t_k and serves scale s with the φ whose tick is nearest to s/(K-1), computed in
    float64 with the first index winning exact ties. Ticks are linspace(1/(3n), 1-1/(3n), n) when n == 4 (a special
    case in the official code), else linspace(1/(2n), 1-1/(2n), n). For n=4, K=10 this yields [0,0,1,1,1,2,2,3,3,3]:
    scales 2 and 7 sit on analytical ties that float64 rounding breaks towards φ1 and φ3, so the float64 arithmetic
    is replicated here rather than derived in closed form.
    """
    if num_phis <= 0:
        raise UsageError(f"num_phis must be positive, got {num_phis}")
    if num_scales == 1:
        return (0,)
    edge = 1 / (3 * num_phis) if num_phis == 4 else 1 / (2 * num_phis)
    ticks = np.linspace(edge, 1 - edge, num_phis)
    return tuple(int(np.argmin(np.abs(ticks - s / (num_scales - 1)))) for s in range(num_scales))


@dataclass(frozen=True)
class ScaleSchedule:
    """Token-map sides from coarsest to finest, e.g. (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) for 256-px images."""

    patch_nums: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_nums", tuple(int(p) for p in self.patch_nums))
        if not self.patch_nums:
            raise UsageError("a scale schedule needs at least one scale")
        if any(p <= 0 for p in self.patch_nums):
            raise UsageError(f"scale sides must be positive, got {self.patch_nums}")
        if any(b <= a for a, b in zip(self.patch_nums, self.patch_nums[1:])):
            raise UsageError(f"scale sides must strictly increase, got {self.patch_nums}")

    @classmethod
    def from_spec(cls, spec: str | tuple[int, ...] | list[int]) -> ScaleSchedule:
        return cls(parse_patch_nums(spec))

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def final_side(self) -> int:
        return self.patch_nums[-1]

    @cached_property
    def lengths(self) -> tuple[int, ...]:
        """Tokens per scale, pn²."""
        return tuple(p * p for p in self.patch_nums)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each scale in the flattened sequence, plus the total length at the end."""
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.lengths)]))

    def span(self, scale: int) -> tuple[int, int]:
        """(begin, end) of one scale's tokens in the flattened sequence."""
        return self.offsets[scale], self.offsets[scale + 1]

    @property
    def total_length(self) -> int:
        """L: all tokens of all scales (680 for the 256-px schedule)."""
        return self.offsets[-1]

    @property
    def first_length(self) -> int:
        """Tokens of the first scale, which are start (class) tokens rather than tokenizer input."""
        return self.lengths[0]

    def level_ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(L,) int64: the scale index of every token."""
        import torch  # deferred: configs built from schedules are read by the command line before torch loads

        levels = np.repeat(np.arange(self.num_scales), self.lengths)
        return torch.tensor(levels, dtype=torch.int64, device=device)

    def attention_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(L, L) bool, True where query may attend key: block-causal, a token sees its own and all earlier scales."""
        level_L = self.level_ids(device)
        return level_L[:, None] >= level_L[None, :]

    def phi_indices(self, num_phis: int) -> tuple[int, ...]:
        return phi_index_map(self.num_scales, num_phis)

    def split(self, tokens_BL: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) flat tokens → per-scale (B, h, w) maps."""
        if tokens_BL.shape[1] != self.total_length:
            raise ValueError(f"expected {self.total_length} tokens per image, got {tokens_BL.shape[1]}")
        chunks = tokens_BL.split(list(self.lengths), dim=1)
        return [c.reshape(c.shape[0], p, p) for c, p in zip(chunks, self.patch_nums)]

    def __str__(self) -> str:
        return "_".join(map(str, self.patch_nums))
