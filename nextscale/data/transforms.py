"""The image transform of the VAR recipe, with resumable per-sample randomness.

Resize the shorter side to round(resize_ratio * image_size) with LANCZOS, crop image_size x image_size (random for
training, centred for evaluation), optionally flip horizontally, and map to a float tensor (3, H, W) in [-1, 1].
Crop offsets and the flip come from `sample_generator(seed, epoch, index)`, never from the global RNG.
"""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from nextscale.data.seeding import sample_generator
from nextscale.errors import UsageError

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Grayscale, palette, CMYK and 1-bit images are converted by PIL; images with transparency (RGBA, LA, palette with a
    transparent colour) are composited onto `background` instead of keeping whatever colour hides under alpha = 0;
    16-bit grayscale is scaled to 8 bits rather than clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        values_HW = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.round(values_HW), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def rgb_to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float32 tensor (3, H, W) in [-1, 1] (the recipe's ToTensor then x * 2 - 1)."""
    pixels_HW3 = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
    return pixels_HW3.permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def resize_shorter_side(image: Image.Image, shorter_side: int) -> Image.Image:
    """Resize with LANCZOS so that min(width, height) == shorter_side, keeping the aspect ratio (as torchvision)."""
    width, height = image.size
    if min(width, height) == shorter_side:
        return image
    if width <= height:
        size = (shorter_side, int(shorter_side * height / width))
    else:
        size = (int(shorter_side * width / height), shorter_side)
    return image.resize(size, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class ImageTransform:
    """The recipe's transform: resize the shorter side, crop, maybe flip, to [-1, 1].

    Call it as `transform(image, index, epoch)`; the same (seed, epoch, index) always gives the same crop and flip.
    """

    image_size: int  # side of the square output
    train: bool = True  # random crop (and flip if enabled) when True; centre crop, no flip when False
    resize_ratio: float = 1.125  # the shorter side is first resized to round(resize_ratio * image_size)
    hflip: bool = False  # random horizontal flip with probability 1/2 (training only); off in the official recipe
    seed: int = 0  # base seed of the per-sample generators

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise UsageError(f"image_size must be positive, got {self.image_size}")
        if self.resize_ratio < 1.0:
            raise UsageError(f"resize_ratio must be >= 1 so that the crop fits, got {self.resize_ratio}")

    @property
    def resize_size(self) -> int:
        """Length of the shorter side after the resize (288 for 256 px with the default ratio)."""
        return round(self.resize_ratio * self.image_size)

    def crop_and_flip(self, height: int, width: int, index: int, epoch: int) -> tuple[int, int, bool]:
        """(top, left, flip) for a resized image of this size; deterministic in (seed, epoch, index)."""
        if not self.train:
            top = int(round((height - self.image_size) / 2.0))
            left = int(round((width - self.image_size) / 2.0))
            return top, left, False
        generator = sample_generator(self.seed, epoch, index)
        top = int(torch.randint(0, height - self.image_size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - self.image_size + 1, (1,), generator=generator))
        flip = bool(torch.rand(1, generator=generator) < 0.5) and self.hflip
        return top, left, flip

    def __call__(self, image: Image.Image, index: int, epoch: int) -> torch.Tensor:
        image = resize_shorter_side(to_rgb(image), self.resize_size)
        width, height = image.size
        top, left, flip = self.crop_and_flip(height, width, index, epoch)
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return rgb_to_tensor(image)
