"""Image helpers: tensors in [0, 1] ↔ PIL / PNG files, and grids."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from nextscale.errors import UsageError


def to_uint8(images_B3HW: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) floats in [0, 1] → (B, H, W, 3) uint8."""
    return images_B3HW.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def to_pil(images_B3HW: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(array.numpy()) for array in to_uint8(images_B3HW)]


def make_grid(images_B3HW: torch.Tensor, columns: int, padding: int = 2, upscale: int = 1) -> Image.Image:
    """Tile images row by row on a white background; `upscale` enlarges tiny images (nearest neighbour)."""
    if upscale > 1:
        images_B3HW = torch.nn.functional.interpolate(images_B3HW.float(), scale_factor=upscale, mode="nearest")
    B, _, H, W = images_B3HW.shape
    columns = max(1, min(columns, B))
    rows = (B + columns - 1) // columns
    canvas = torch.ones(3, rows * (H + padding) + padding, columns * (W + padding) + padding)
    for i in range(B):
        r, c = divmod(i, columns)
        top, left = padding + r * (H + padding), padding + c * (W + padding)
        canvas[:, top : top + H, left : left + W] = images_B3HW[i].float().clamp(0, 1).cpu()
    return to_pil(canvas.unsqueeze(0))[0]


def save_grid(images_B3HW: torch.Tensor, path: str | os.PathLike, columns: int, upscale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images_B3HW, columns, upscale=upscale).save(path)
    return path


def load_image(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError:  # PIL's guard against a small file that decodes to gigabytes
        raise UsageError(
            f"{path} is too large to read: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels (resize it first)"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UsageError(f"{path} is not a readable image: {err}") from None
