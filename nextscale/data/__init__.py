"""Datasets, the recipe's image transform and the resumable distributed sampler.

Every dataset yields (image_3HW float32 in [-1, 1], label int) and has `.classes` and `.num_classes`.
"""

from nextscale.data.base import ImageDataset
from nextscale.data.build import DATASETS, DataConfig, build_dataset
from nextscale.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_CLASSES, FashionMNIST
from nextscale.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset
from nextscale.data.idx import IdxFormatError, parse_idx, read_idx
from nextscale.data.procedural import PROCEDURAL_CLASSES, ProceduralShapes
from nextscale.data.sampler import ResumableDistributedSampler
from nextscale.data.seeding import SampleKey, derive_seed, sample_generator
from nextscale.data.transforms import ImageTransform, to_rgb

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
