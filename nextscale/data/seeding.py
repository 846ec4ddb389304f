"""Per-sample randomness that does not depend on process, worker or resume point.

Every random choice made for a sample (crop offsets, flips, procedural parameters) is drawn from a private
`torch.Generator` whose seed is a hash of integers such as (seed, epoch, index). The global RNG is never used, so the
same sample at the same epoch gets the same randomness in any DataLoader worker and after any resume.
"""

from typing import NamedTuple

import torch

_MASK_64 = (1 << 64) - 1


class SampleKey(NamedTuple):
    """A dataset key that carries its epoch, so that workers never need to be told the epoch separately.

    `ResumableDistributedSampler(yield_epoch=True)` yields batches of these; every dataset in `nextscale.data`
    accepts them (and plain ints, which use the dataset's `epoch` attribute).
    """

    index: int
    epoch: int


def _splitmix64(state: int) -> int:
    """One step of the SplitMix64 mixer: a bijection on 64-bit integers with good avalanche behaviour."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK_64
    state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK_64
    state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK_64
    return state ^ (state >> 31)


def derive_seed(*parts: int) -> int:
    """Hash integers into one seed in [0, 2**63): nearby inputs such as (0, 1) and (1, 0) give unrelated seeds."""
    state = 0x6A09E667F3BCC908  # an arbitrary non-zero start
    for part in parts:
        state = _splitmix64(state ^ (int(part) & _MASK_64))
    return state >> 1


def sample_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded with `derive_seed(*parts)`, e.g. `sample_generator(seed, epoch, index)`."""
    return torch.Generator().manual_seed(derive_seed(*parts))
