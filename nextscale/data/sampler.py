"""An infinite, resumable, distributed batch sampler following the VAR recipe's `DistInfiniteBatchSampler`.

Epoch e uses one permutation of the dataset, drawn from a generator seeded with `derive_seed(seed, e)` and identical on
every rank. It is padded to a multiple of the global batch by repeating its head and cut into global batches; rank r
takes the r-th slice of each. (The official sampler gives each rank a contiguous shard of the epoch instead; slicing
every global batch means N processes train on exactly the batches one process would, so a run's result does not
depend on how many processes share it.) Iteration never stops: after the last batch of epoch e comes the first batch
of epoch e + 1.

The position is (epoch, batches_done): the next batch to be yielded is batch `batches_done` of epoch `epoch`. Saving
`state_dict()` and loading it into a fresh sampler continues with exactly the batches an uninterrupted run would see.
"""

import math
from collections.abc import Iterator
from typing import Any

import torch

from nextscale.data.seeding import SampleKey, derive_seed
from nextscale.errors import UsageError


class ResumableDistributedSampler:
    """A batch sampler: pass it as `DataLoader(dataset, batch_sampler=sampler)`; it yields lists of `batch_size` keys.

    With `yield_epoch=True` (default) the keys are `SampleKey(index, epoch)`, so a dataset in a DataLoader worker knows
    the epoch of every sample without being told; with False they are plain ints, for any map-style dataset.

    A DataLoader asks for batches ahead of the training loop (prefetching), so the sampler's own position can be ahead
    of what was trained on. To checkpoint, save `state_after(batches_trained)` with the number of batches the loop
    has consumed since epoch 0; `state_dict()` is exact only when nothing prefetches (direct iteration).
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        yield_epoch: bool = True,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError(f"dataset_size must be positive, got {dataset_size}")
        if batch_size <= 0:
            raise ValueError(f"batch_size (per rank) must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.dataset_size = dataset_size
        self.batch_size = batch_size  # per rank
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle  # False: the dataset order (for evaluation)
        self.yield_epoch = yield_epoch
        self.epoch = 0  # epoch of the next batch to be yielded
        self.batches_done = 0  # batches of that epoch already yielded
        self._cached_epoch: int | None = None
        self._cached_shard: list[int] = []

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.dataset_size / self.global_batch_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank (iteration itself is infinite)."""
        return self.batches_per_epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The global order of epoch `epoch`: a permutation padded with its head to a multiple of the global batch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            order = torch.randperm(self.dataset_size, generator=generator)
        else:
            order = torch.arange(self.dataset_size)
        padded_size = self.batches_per_epoch * self.global_batch_size
        repeats = math.ceil(padded_size / self.dataset_size)  # > 2 only when the dataset is smaller than a batch
        return order.repeat(repeats)[:padded_size]

    def rank_shard(self, epoch: int) -> list[int]:
        """This rank's slice of every global batch of the epoch, in batch order."""
        order = self.epoch_order(epoch).view(self.batches_per_epoch, self.world_size, self.batch_size)
        return order[:, self.rank].reshape(-1).tolist()

    def __iter__(self) -> Iterator[list[int] | list[SampleKey]]:
        while True:
            epoch, batch_index = self.epoch, self.batches_done
            if self._cached_epoch != epoch:
                self._cached_shard, self._cached_epoch = self.rank_shard(epoch), epoch
            indices = self._cached_shard[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
            self.load_position(*divmod(epoch * self.batches_per_epoch + batch_index + 1, self.batches_per_epoch))
            yield [SampleKey(i, epoch) for i in indices] if self.yield_epoch else indices

    def load_position(self, epoch: int, batches_done: int) -> None:
        if epoch < 0 or not 0 <= batches_done < self.batches_per_epoch:
            limit = self.batches_per_epoch
            raise ValueError(f"invalid position: epoch {epoch}, batches_done {batches_done} (of {limit} per epoch)")
        self.epoch, self.batches_done = epoch, batches_done

    def _layout(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "shuffle": self.shuffle,
            "dataset_size": self.dataset_size,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch to be yielded, and the settings that define the batches."""
        return {"epoch": self.epoch, "batches_done": self.batches_done, **self._layout()}

    def state_after(self, batches_trained: int) -> dict[str, Any]:
        """The state after `batches_trained` batches in total since epoch 0, batch 0 (use this with a DataLoader)."""
        epoch, batches_done = divmod(batches_trained, self.batches_per_epoch)
        return {"epoch": epoch, "batches_done": batches_done, **self._layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`. Layout changes (world size, batch size, dataset size) are allowed only at the start
        of an epoch, where they cannot shift the remaining batches; a different seed or shuffle setting is an error."""
        current_layout = self._layout()
        changed = {key: (state[key], now) for key, now in current_layout.items() if key in state and state[key] != now}
        for key in ("seed", "shuffle"):
            if key in changed:
                saved, now = changed[key]
                raise UsageError(f"sampler state was saved with {key}={saved}, this sampler has {key}={now}")
        if changed and state["batches_done"] != 0:
            raise UsageError(f"cannot resume mid-epoch with a different layout (saved, now): {changed}")
        self.load_position(int(state["epoch"]), int(state["batches_done"]))
