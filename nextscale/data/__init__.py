"""Datasets, the recipe's image transform and the resumable distributed sampler.

Every dataset yields (image_3HW float32 in [-1, 1], label int) and has `.classes` and `.num_classes`.
The names below are imported on first use: `nextscale.data.config` must load without torch, for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nextscale.lazy_exports import lazy_exports

# public name -> the module that defines it
_EXPORTS = {
    "ImageDataset": "nextscale.data.base",
    "DATASETS": "nextscale.data.config",
    "DataConfig": "nextscale.data.config",
    "build_dataset": "nextscale.data.build",
    "DEFAULT_FASHION_MNIST_ROOT": "nextscale.data.fashion_mnist",
    "FASHION_MNIST_CLASSES": "nextscale.data.fashion_mnist",
    "FashionMNIST": "nextscale.data.fashion_mnist",
    "IMAGE_EXTENSIONS": "nextscale.data.folder",
    "ImageFolderDataset": "nextscale.data.folder",
    "IdxFormatError": "nextscale.data.idx",
    "parse_idx": "nextscale.data.idx",
    "read_idx": "nextscale.data.idx",
    "PROCEDURAL_CLASSES": "nextscale.data.procedural",
    "ProceduralShapes": "nextscale.data.procedural",
    "ResumableDistributedSampler": "nextscale.data.sampler",
    "SampleKey": "nextscale.data.seeding",
    "derive_seed": "nextscale.data.seeding",
    "sample_generator": "nextscale.data.seeding",
    "ImageTransform": "nextscale.data.transforms",
    "to_rgb": "nextscale.data.transforms",
}

__all__ = [
    "DATASETS",
    "DEFAULT_FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "PROCEDURAL_CLASSES",
    "DataConfig",
    "FashionMNIST",
    "IdxFormatError",
    "ImageDataset",
    "ImageFolderDataset",
    "ImageTransform",
    "ProceduralShapes",
    "ResumableDistributedSampler",
    "SampleKey",
    "build_dataset",
    "derive_seed",
    "parse_idx",
    "read_idx",
    "sample_generator",
    "to_rgb",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from nextscale.data.base import ImageDataset
    from nextscale.data.build import build_dataset
    from nextscale.data.config import DATASETS, DataConfig
    from nextscale.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_CLASSES, FashionMNIST
    from nextscale.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset
    from nextscale.data.idx import IdxFormatError, parse_idx, read_idx
    from nextscale.data.procedural import PROCEDURAL_CLASSES, ProceduralShapes
    from nextscale.data.sampler import ResumableDistributedSampler
    from nextscale.data.seeding import SampleKey, derive_seed, sample_generator
    from nextscale.data.transforms import ImageTransform, to_rgb
