"""Fashion-MNIST (Xiao et al. 2017) read from its IDX files, as 3-channel images in [-1, 1].

The four files (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
`t10k-labels-idx1-ubyte.gz`) are looked for in `root`, by default where the Debian package `dataset-fashion-mnist`
installs them. A split is loaded once into a uint8 tensor (N, S, S) already resized to `image_size`.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from nextscale.data.base import ImageDataset
from nextscale.data.idx import IdxFormatError, read_idx
from nextscale.data.seeding import sample_generator
from nextscale.errors import UsageError

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# split name -> file prefix
_SPLIT_PREFIXES = {"train": "train", "test": "t10k", "val": "t10k", "validation": "t10k"}

_INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist` or pass root=<folder with the IDX .gz files>"


def _find_idx_file(root: Path, name: str) -> Path:
    """`root/name.gz`, or the uncompressed `root/name`."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"Fashion-MNIST file {root / name}.gz not found; {_INSTALL_HINT}")


def load_fashion_mnist(root: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images_NHW uint8, labels_N int64) of one split ('train' or 'test'), checked for consistency."""
    root = Path(root)
    if split not in _SPLIT_PREFIXES:
        raise UsageError(f"Fashion-MNIST split must be one of {sorted(_SPLIT_PREFIXES)}, got {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST directory {root} not found; {_INSTALL_HINT}")
    prefix = _SPLIT_PREFIXES[split]
    images_path = _find_idx_file(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx_file(root, f"{prefix}-labels-idx1-ubyte")
    images_NHW, labels_N = read_idx(images_path), read_idx(labels_path)
    if images_NHW.dtype != torch.uint8 or images_NHW.ndim != 3:
        found = f"{images_NHW.dtype} {tuple(images_NHW.shape)}"
        raise IdxFormatError(f"{images_path}: expected uint8 images (N, H, W), got {found}")
    if labels_N.dtype != torch.uint8 or labels_N.ndim != 1:
        raise IdxFormatError(f"{labels_path}: expected uint8 labels (N,), got {labels_N.dtype} {tuple(labels_N.shape)}")
    if len(images_NHW) != len(labels_N):
        raise IdxFormatError(f"{images_path} has {len(images_NHW)} images but {labels_path} has {len(labels_N)} labels")
    if len(labels_N) and int(labels_N.max()) >= len(FASHION_MNIST_CLASSES):
        raise IdxFormatError(f"{labels_path}: label {int(labels_N.max())} outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
    return images_NHW, labels_N.long()


def resize_uint8_images(images_NHW: torch.Tensor, image_size: int, chunk_size: int = 8192) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 grayscale images to (N, image_size, image_size), rounded back to uint8."""
    if images_NHW.shape[-2:] == (image_size, image_size):
        return images_NHW.clone()
    chunks = []
    for images_nHW in images_NHW.split(chunk_size):
        resized_n1SS = F.interpolate(
            images_nHW[:, None].float(), size=(image_size, image_size), mode="bilinear", antialias=True
        )
        chunks.append(resized_n1SS[:, 0].round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks) if chunks else images_NHW.new_empty(0, image_size, image_size)


class FashionMNIST(ImageDataset):
    """Fashion-MNIST as (image_3SS in [-1, 1], label); S = image_size.

    Optional training augmentation (off by default): random crop after zero padding by `crop_padding` pixels, and a
    horizontal flip; both drawn from `sample_generator(seed, epoch, index)`.
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 32,
        root: str | Path | None = None,
        *,
        crop_padding: int = 0,
        hflip: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if image_size <= 0:
            raise UsageError(f"image_size must be positive, got {image_size}")
        if crop_padding < 0:
            raise UsageError(f"crop_padding must be >= 0, got {crop_padding}")
        self.root = Path(root) if root is not None else DEFAULT_FASHION_MNIST_ROOT
        self.split = split
        self.image_size = image_size
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.seed = seed
        self.classes = list(FASHION_MNIST_CLASSES)
        images_NHW, self.labels_N = load_fashion_mnist(self.root, split)
        self.images_NSS = resize_uint8_images(images_NHW, image_size)

    def __len__(self) -> int:
        return len(self.labels_N)

    def load(self, index: int, epoch: int) -> tuple[torch.Tensor, int]:
        image_SS = self.images_NSS[index]
        if self.crop_padding or self.hflip:
            generator = sample_generator(self.seed, epoch, index)
            if self.crop_padding:
                padding, size = self.crop_padding, self.image_size
                top, left = torch.randint(0, 2 * padding + 1, (2,), generator=generator).tolist()
                image_SS = F.pad(image_SS, (padding,) * 4)[top : top + size, left : left + size]
            if self.hflip and bool(torch.rand(1, generator=generator) < 0.5):
                image_SS = image_SS.flip(-1)
        image_3SS = image_SS.float().div(127.5).sub_(1.0).expand(3, -1, -1).contiguous()
        return image_3SS, int(self.labels_N[index])
