"""Class-labelled image folders in the ImageNet layout.

    root/train/<class>/**/*.jpg    (or root/<class>/... when root has no split folders)

Labels are positions in the sorted list of class folder names. Unreadable images are skipped when they are loaded:
the dataset returns the next readable sample instead, warns once per file and counts it in `skipped_files`.
"""

import logging
import os
from pathlib import Path

import torch
from PIL import Image

from nextscale.data.base import ImageDataset
from nextscale.data.transforms import ImageTransform
from nextscale.errors import UsageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLIT_FOLDER_NAMES = ("train", "val", "validation", "test")
# what PIL raises for a damaged, truncated, hand-broken or oversized (decompression bomb) image file
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def resolve_split_folder(root: Path, split: str) -> Path:
    """`root/split` if it exists; `root` itself if it has no split folders at all; otherwise an error."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if (root / split).is_dir():
        return root / split
    present = [name for name in SPLIT_FOLDER_NAMES if (root / name).is_dir()]
    if present:
        raise FileNotFoundError(f"no {split!r} folder in {root} (found split folders: {', '.join(present)})")
    return root


def _is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def scan_image_folder(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(sorted class names, [(image path, label), ...] in sorted order); class folders are searched recursively."""
    class_names = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and entry.name[0] != ".")
    samples: list[tuple[str, int]] = []
    empty_classes = []
    for label, class_name in enumerate(class_names):
        count_before = len(samples)
        for directory, subdirectories, file_names in os.walk(folder / class_name, followlinks=True):
            subdirectories.sort()
            image_names = [name for name in sorted(file_names) if _is_image_file(name)]
            samples.extend((os.path.join(directory, name), label) for name in image_names)
        if len(samples) == count_before:
            empty_classes.append(class_name)
    if not samples:
        loose_images = any(_is_image_file(entry.name) for entry in os.scandir(folder) if entry.is_file())
        if loose_images:
            raise UsageError(f"images in {folder} must be in one subfolder per class ({folder}/<class>/image.jpg)")
        raise UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in class subfolders of {folder}")
    if empty_classes:
        logger.warning("%d class folder(s) in %s have no images: %s", len(empty_classes), folder, empty_classes[:10])
    return class_names, samples


class ImageFolderDataset(ImageDataset):
    """Images from class folders, transformed by the recipe's `ImageTransform`.

    `split == "train"` uses random crops (and flips if `hflip`); other splits use centre crops unless `train` says
    otherwise. `skipped_files` counts the distinct unreadable files met so far in this process (each DataLoader worker
    keeps its own count).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 256,
        *,
        train: bool | None = None,
        hflip: bool = False,
        resize_ratio: float = 1.125,
        seed: int = 0,
        allow_single_class: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.split = split
        self.folder = resolve_split_folder(self.root, split)
        self.classes, self.samples = scan_image_folder(self.folder)
        num_used_classes = len({label for _, label in self.samples})
        if num_used_classes < 2 and not allow_single_class:
            raise UsageError(
                f"{self.folder} has images of only {num_used_classes} class; class-conditional training needs at least"
                " two classes (pass allow_single_class=True, or --allow-single-class on the command line, to use it"
                " anyway)"
            )
        self._require_a_readable_image()
        train = split == "train" if train is None else train
        self.transform = ImageTransform(image_size, train=train, resize_ratio=resize_ratio, hflip=hflip, seed=seed)
        self.skipped_files = 0
        self._unreadable_paths: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def _require_a_readable_image(self) -> None:
        """Refuse a folder where no image can be decoded now, not in the middle of the first batch."""
        for path, _ in self.samples:
            try:
                with Image.open(path) as image:
                    image.load()
                return
            except UNREADABLE:
                continue
        raise UsageError(
            f"none of the {len(self.samples)} images in {self.folder} could be read (damaged or not images)"
        )

    def load(self, index: int, epoch: int) -> tuple[torch.Tensor, int]:
        """The sample at `index`, or the first readable one after it (wrapping around)."""
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            path, label = self.samples[candidate]
            if path in self._unreadable_paths:
                continue
            try:
                with Image.open(path) as image:
                    image.load()
                    return self.transform(image, candidate, epoch), label
            except UNREADABLE as error:
                self._unreadable_paths.add(path)
                self.skipped_files += 1
                logger.warning("skipping unreadable image %s (%s: %s)", path, type(error).__name__, error)
        raise UsageError(f"none of the {len(self.samples)} images in {self.folder} could be read")
