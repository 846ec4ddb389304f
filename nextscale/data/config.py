"""`DataConfig`, the inputs of `build_dataset` (build.py), and the names of the built-in sets. Nothing here imports
torch, so that the command line builds its data options from it before torch loads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nextscale.errors import UsageError

if TYPE_CHECKING:  # annotations only
    from nextscale.data.base import ImageDataset

logger = logging.getLogger(__name__)

# Built-in dataset names (CLI choices); any other name is taken as the path of an image folder.
DATASETS = ("procedural", "fashion-mnist")


@dataclass
class DataConfig:
    """Inputs of `build_dataset`, for embedding in a training config and saving next to checkpoints."""

    name: str = "procedural"  # one of DATASETS or the path of an image folder
    image_size: int = 256  # side of the square training images
    root: str | None = None  # folder of the data when `name` does not say it (Fashion-MNIST IDX files)
    seed: int = 0  # seeds augmentation and the procedural images
    hflip: bool = False  # random horizontal flips in training (the official recipe has them off)
    resize_ratio: float = 1.125  # image folders: resize the shorter side to resize_ratio * image_size, then crop
    num_samples: int | None = None  # procedural only; None: 10k train / 1k val
    num_classes: int | None = None  # procedural only; None: all 10 patterns
    allow_single_class: bool = False  # image folders: accept a folder with one class

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise UsageError(f"image_size must be positive, got {self.image_size}")
        if self.resize_ratio < 1.0:
            raise UsageError(f"resize_ratio must be >= 1, got {self.resize_ratio}")

    def build_validation(self) -> ImageDataset:
        """The "val" split, else "test", else (with a warning) the training images without augmentation."""
        for split in ("val", "test"):
            try:
                return self.build(split)
            except (FileNotFoundError, ValueError):
                continue
        logger.warning("no validation split found for %s; evaluating on training images", self.name)
        return self.build("train")

    def build(self, split: str) -> ImageDataset:
        from nextscale.data.build import build_dataset  # deferred: it loads torch, and the CLI reads this first

        return build_dataset(
            self.name,
            split,
            self.image_size,
            root=self.root,
            seed=self.seed,
            hflip=self.hflip,
            resize_ratio=self.resize_ratio,
            num_samples=self.num_samples,
            num_classes=self.num_classes,
            allow_single_class=self.allow_single_class,
        )
