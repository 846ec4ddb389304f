"""The surface every nextscale dataset offers to the training loop.

`dataset[key] -> (image_3HW, label)` with `image_3HW` a float32 tensor of shape (3, H, W) in [-1, 1] and `label` an int
in [0, num_classes). `key` is an int index (randomness then uses `dataset.epoch`, set by `set_epoch`) or a
`SampleKey(index, epoch)`, which carries the epoch with it and is what DataLoader workers should receive.
"""

import numbers

import torch
from torch.utils.data import Dataset

from nextscale.data.seeding import SampleKey


class ImageDataset(Dataset):
    """Base class: labelled images, class names, and the epoch used to seed per-sample randomness."""

    classes: list[str]  # class names; the position of a name is its label, saved with checkpoints

    def __init__(self) -> None:
        self.epoch = 0  # used only for plain int keys; SampleKey keys carry their own epoch

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int, epoch: int) -> tuple[torch.Tensor, int]:
        """Return (image_3HW in [-1, 1], label) for a valid, non-negative index."""
        raise NotImplementedError

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, int]:
        index, epoch = self.resolve_key(key)
        return self.load(index, epoch)

    def resolve_key(self, key: int | SampleKey | tuple[int, int]) -> tuple[int, int]:
        """Turn a key into (index in [0, len), epoch); negative indices count from the end as for lists."""
        if isinstance(key, tuple):
            index, epoch = key
        else:
            index, epoch = key, self.epoch
        if isinstance(index, torch.Tensor) and index.numel() == 1:
            index = index.item()
        if not isinstance(index, numbers.Integral):
            raise TypeError(f"dataset index must be an int or SampleKey, got {type(key).__name__}")
        index, size = int(index), len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for a dataset of {size} samples")
        return index % size, int(epoch)
