"""Build a dataset by name: "procedural", "fashion-mnist", or a path to an image folder."""

import logging
from dataclasses import dataclass
from pathlib import Path

from nextscale.data.base import ImageDataset
from nextscale.data.fashion_mnist import FashionMNIST
from nextscale.data.folder import ImageFolderDataset
from nextscale.data.procedural import PROCEDURAL_CLASSES, ProceduralShapes
from nextscale.data.seeding import derive_seed
from nextscale.errors import UsageError

logger = logging.getLogger(__name__)

# Built-in dataset names (CLI choices); any other name is taken as the path of an image folder.
DATASETS = ("procedural", "fashion-mnist")

TRAIN_SPLIT = "train"
PROCEDURAL_DEFAULT_SIZES = {"train": 10_000, "val": 1_000}  # num_samples when not given


def build_dataset(
    name: str,
    split: str,
    image_size: int,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    hflip: bool = False,
    resize_ratio: float = 1.125,
    num_samples: int | None = None,
    num_classes: int | None = None,
    allow_single_class: bool = False,
) -> ImageDataset:
    """A dataset whose items are (image_3HW float in [-1, 1], label int), with `.classes` and `.num_classes`.

    name: "procedural" (built-in; `num_samples`, `num_classes` apply), "fashion-mnist" (`root` overrides the default
        directory), or the path of an image folder (`root` may give the path instead, with name "folder").
    split: "train" gets random crops (and flips when `hflip`); any other split ("val", "test") is deterministic.
    seed: seeds per-sample augmentation; for "procedural" it also selects the images (each split gets its own).
    """
    train = split == TRAIN_SPLIT
    if name == "procedural":
        if num_samples is None:
            num_samples = PROCEDURAL_DEFAULT_SIZES["train" if train else "val"]
        if num_classes is None:
            num_classes = len(PROCEDURAL_CLASSES)
        split_seed = seed if train else derive_seed(seed, *split.encode())  # other splits draw other images
        return ProceduralShapes(num_samples, image_size, num_classes, seed=split_seed)
    if name == "fashion-mnist":
        return FashionMNIST(split, image_size, root, hflip=hflip and train, seed=seed)
    folder = root if name == "folder" else name
    if folder is None or not Path(folder).is_dir():
        raise UsageError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}"
            " or give the path of an existing image folder"
        )
    return ImageFolderDataset(
        folder,
        split,
        image_size,
        hflip=hflip,
        resize_ratio=resize_ratio,
        seed=seed,
        allow_single_class=allow_single_class,
    )


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
