"""Build a dataset by name: "procedural", "fashion-mnist", or a path to an image folder. Its settings, `DataConfig`,
live in config.py (torch-free, for the command line) and are re-exported here."""

from pathlib import Path

from nextscale.data.base import ImageDataset
from nextscale.data.config import DATASETS, DataConfig
from nextscale.data.fashion_mnist import FashionMNIST
from nextscale.data.folder import ImageFolderDataset
from nextscale.data.procedural import PROCEDURAL_CLASSES, ProceduralShapes
from nextscale.data.seeding import derive_seed
from nextscale.errors import UsageError

__all__ = ["DATASETS", "PROCEDURAL_DEFAULT_SIZES", "TRAIN_SPLIT", "DataConfig", "build_dataset"]

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
