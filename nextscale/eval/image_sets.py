"""Image sets to evaluate, read batch by batch as uint8 RGB so that 50,000 ImageNet-size images never sit in memory.

A sample set is
- a folder of images (PNG, JPEG …; searched recursively, sorted by path), such as the one `nextscale sample-set`
  writes: names like `class0207_seed0000012_row0005.png` carry the class, and when every name does, the set has labels;
- or an `.npz` with `arr_0`, uint8 (N, H, W, 3) (the OpenAI-evaluator format `sample-set` packs), and optionally
  `labels`, ints (N,).
A reference set is one of those, or a built-in split: `fashion-mnist:test`, `fashion-mnist:train`.

Every image of a set must have the same size; a missing, empty or mixed-size set is refused with a one-line error.
Letters: N images, n images of one batch, H × W pixels.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nextscale.data.fashion_mnist import FashionMNIST
from nextscale.data.folder import IMAGE_EXTENSIONS
from nextscale.errors import UsageError
from nextscale.eval.config import BUILTIN_REFERENCES  # noqa: F401 (re-exported)
from nextscale.eval.metrics import psnr

CLASS_IN_NAME = re.compile(r"^class(\d+)_")  # the class prefix of sample-set file names
LABELS_KEY = "labels"


@dataclass
class ImageSet:
    """N images of one size, read in batches of uint8 (n, H, W, 3), with labels (N,) when they are known."""

    description: str  # what the set is, for messages and tables
    num_images: int
    height: int
    width: int
    labels_N: torch.Tensor | None
    fingerprint: dict  # what identifies the content (paths, sizes, times): part of the reference-statistics key
    read_batches: Callable[[int], Iterator[np.ndarray]] = field(repr=False)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 (n, H, W, 3) arrays in set order, n = batch_size except for the last batch."""
        yield from self.read_batches(batch_size)


def load_image_set(path: str | os.PathLike, role: str = "image set") -> ImageSet:
    """A folder of images or an `.npz` (see the module docstring); `role` names it in errors (e.g. "--samples")."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{role} {path} not found")
    if path.is_dir():
        return _folder_set(path)
    if path.suffix == ".npz":
        return _npz_set(path)
    raise UsageError(f"{role} {path} is neither a folder of images nor an .npz")


def load_reference(
    spec: str, image_size: int, root: str | os.PathLike | None = None, role: str = "reference"
) -> ImageSet:
    """`fashion-mnist:test` / `fashion-mnist:train` at `image_size` px (`root`: folder of the IDX files), or the path
    of a folder / `.npz` (whose own size is kept)."""
    if spec.startswith("fashion-mnist"):
        if spec not in BUILTIN_REFERENCES:
            raise UsageError(f"unknown reference {spec!r}: use {' or '.join(BUILTIN_REFERENCES)}, a folder or an .npz")
        return fashion_mnist_set(spec.partition(":")[2], image_size, root)
    return load_image_set(spec, role)


def fashion_mnist_set(split: str, image_size: int, root: str | os.PathLike | None = None) -> ImageSet:
    """A Fashion-MNIST split as `nextscale.data` loads it at `image_size`, gray copied to three channels."""
    dataset = FashionMNIST(split, image_size, root)
    images_NSS = dataset.images_NSS

    def read_batches(batch_size: int) -> Iterator[np.ndarray]:
        for begin in range(0, len(images_NSS), batch_size):
            gray_nSS = images_NSS[begin : begin + batch_size].numpy()
            yield np.repeat(gray_nSS[..., None], 3, axis=-1)

    return ImageSet(
        description=f"fashion-mnist:{split}",
        num_images=len(images_NSS),
        height=image_size,
        width=image_size,
        labels_N=dataset.labels_N.clone(),
        fingerprint={"dataset": "fashion-mnist", "split": split, "root": str(dataset.root.resolve())},
        read_batches=read_batches,
    )


def images_set(images_NHW3: np.ndarray | torch.Tensor, labels_N=None, description: str = "images") -> ImageSet:
    """An in-memory uint8 (N, H, W, 3) array as an ImageSet (not cacheable as a reference: no stable fingerprint)."""
    images_NHW3 = np.asarray(images_NHW3)
    if images_NHW3.dtype != np.uint8 or images_NHW3.ndim != 4 or images_NHW3.shape[-1] != 3:
        raise UsageError(f"{description}: expected uint8 (N, H, W, 3), got {images_NHW3.dtype} {images_NHW3.shape}")
    if len(images_NHW3) == 0:
        raise UsageError(f"{description} holds no images")
    labels = _check_labels(labels_N, len(images_NHW3), description)

    def read_batches(batch_size: int) -> Iterator[np.ndarray]:
        for begin in range(0, len(images_NHW3), batch_size):
            yield images_NHW3[begin : begin + batch_size]

    _, height, width, _ = images_NHW3.shape
    return ImageSet(description, len(images_NHW3), height, width, labels, {}, read_batches)


def _check_labels(labels_N, count: int, description: str) -> torch.Tensor | None:
    if labels_N is None:
        return None
    labels_N = torch.as_tensor(np.asarray(labels_N)).long().flatten()
    if len(labels_N) != count:
        raise UsageError(f"{description} has {count} images but {len(labels_N)} labels")
    return labels_N


def _folder_set(folder: Path) -> ImageSet:
    paths = sorted(
        Path(directory) / name
        for directory, subdirectories, names in os.walk(folder, followlinks=True)
        for name in names
        if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise UsageError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    first_size, first_path = None, None
    for path in paths:
        try:
            with Image.open(path) as image:
                size = image.size
        except OSError as err:
            raise UsageError(f"{path} is not a readable image ({err})") from None
        if first_size is None:
            first_size, first_path = size, path
        elif size != first_size:
            raise UsageError(
                f"{folder} mixes image sizes: {first_size[0]}×{first_size[1]} ({first_path.name}) "
                f"and {size[0]}×{size[1]} ({path.name})"
            )
    matches = [CLASS_IN_NAME.match(path.name) for path in paths]
    labels_N = torch.tensor([int(m.group(1)) for m in matches]) if all(matches) else None

    def read_batches(batch_size: int) -> Iterator[np.ndarray]:
        for begin in range(0, len(paths), batch_size):
            yield np.stack([_read_rgb(path) for path in paths[begin : begin + batch_size]])

    stats = [path.stat() for path in paths]
    fingerprint = {
        "folder": str(folder.resolve()),
        "files": len(paths),
        "bytes": sum(s.st_size for s in stats),
        "latest_mtime_ns": max(s.st_mtime_ns for s in stats),
    }
    width, height = first_size
    return ImageSet(str(folder), len(paths), height, width, labels_N, fingerprint, read_batches)


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise UsageError(f"{path} is not a readable image ({err})") from None


def _read_npy_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of an .npy stream, leaving it at the first byte of the data."""
    major, _ = np.lib.format.read_magic(member)
    if major == 1:
        return np.lib.format.read_array_header_1_0(member)
    return np.lib.format.read_array_header_2_0(member)


def _npz_header(archive: zipfile.ZipFile, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    if "arr_0.npy" not in archive.namelist():
        raise UsageError(f"{path} has no arr_0 (expected uint8 images (N, H, W, 3))")
    with archive.open("arr_0.npy") as member:
        shape, fortran_order, dtype = _read_npy_header(member)
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran_order:
        raise UsageError(f"{path}: arr_0 must be uint8 (N, H, W, 3) in C order, got {dtype} {shape}")
    return shape, dtype


def _npz_set(path: Path) -> ImageSet:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UsageError(f"{path} is not a readable .npz ({err})") from None
    with archive:
        (count, height, width, _), _ = _npz_header(archive, path)
        has_labels = f"{LABELS_KEY}.npy" in archive.namelist()
        member_crc32 = {info.filename: info.CRC for info in archive.infolist()}  # a content hash the zip already holds
    if count == 0:
        raise UsageError(f"{path} holds no images")
    labels_N = None
    if has_labels:
        with np.load(path) as arrays:
            labels_N = _check_labels(arrays[LABELS_KEY], count, str(path))
    image_bytes = height * width * 3

    def read_batches(batch_size: int) -> Iterator[np.ndarray]:
        with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as member:
            _read_npy_header(member)
            for begin in range(0, count, batch_size):
                n = min(batch_size, count - begin)
                data = member.read(n * image_bytes)
                if len(data) != n * image_bytes:
                    raise UsageError(f"{path}: arr_0 ends after {begin + len(data) // image_bytes} of {count} images")
                yield np.frombuffer(data, np.uint8).reshape(n, height, width, 3)

    stat = path.stat()
    fingerprint = {
        "npz": str(path.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "crc32": member_crc32,
    }
    return ImageSet(str(path), count, height, width, labels_N, fingerprint, read_batches)


class ReconstructedSet:
    """An image set passed through a tokenizer (encode, then decode from the finest f̂): what the best transformer
    on that tokenizer could produce, so its scores are every model's floor. `reconstruct` maps images in [-1, 1]
    (B, 3, H, W) to images in [-1, 1] (a tokenizer's: `tokenizer_reconstruction(tokenizer)`). Reading the
    set accumulates the reconstructions' PSNR against the originals (`psnr`, dB, the mean over images)."""

    def __init__(self, source: ImageSet, reconstruct: Callable[[torch.Tensor], torch.Tensor], description: str) -> None:
        self.psnr_sum, self.psnr_count = 0.0, 0
        self.image_set = ImageSet(
            description=f"{source.description} through {description}",
            num_images=source.num_images,
            height=source.height,
            width=source.width,
            labels_N=source.labels_N,
            fingerprint={**source.fingerprint, "reconstructed_by": description},
            read_batches=lambda batch_size: self._read(source, reconstruct, batch_size),
        )

    @property
    def psnr(self) -> float:
        return self.psnr_sum / max(self.psnr_count, 1)

    def _read(self, source: ImageSet, reconstruct, batch_size: int) -> Iterator[np.ndarray]:
        self.psnr_sum, self.psnr_count = 0.0, 0
        for batch_nHW3 in source.batches(batch_size):
            images_nCHW = torch.as_tensor(np.array(batch_nHW3)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            with torch.no_grad():
                out_nCHW = reconstruct(images_nCHW).float().clamp(-1, 1)
            self.psnr_sum += float(psnr(out_nCHW, images_nCHW).sum())
            self.psnr_count += len(images_nCHW)
            yield out_nCHW.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def tokenizer_reconstruction(tokenizer) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function that round-trips images through `tokenizer`: encode, decode the f̂ of all scales."""
    tokenizer.eval()
    return lambda images_BCHW: tokenizer.decode_fhat(tokenizer.encode_with_fhat(images_BCHW)[1][-1])
