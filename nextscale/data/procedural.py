"""A built-in procedural dataset: ten visually distinct pattern classes, rendered from (seed, index) with torch ops.

Each sample draws its colours (a light foreground on a dark background), position, size, period and phase from
`sample_generator(seed, index)`, so the dataset needs no files and is identical on every machine. Shapes have soft,
about one-pixel-wide edges so that they stay clean at any resolution.
"""

import math

import torch

from nextscale.data.base import ImageDataset
from nextscale.data.seeding import sample_generator
from nextscale.errors import UsageError

PROCEDURAL_CLASSES = [
    "circle",
    "square",
    "triangle",
    "horizontal stripes",
    "vertical stripes",
    "checkerboard",
    "ring",
    "cross",
    "diagonal stripes",
    "gradient",
]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _soft_mask(signed_distance_HW: torch.Tensor, image_size: int) -> torch.Tensor:
    """Coverage in [0, 1] from a signed distance (image units, positive inside) with a one-pixel ramp."""
    return (0.5 + signed_distance_HW * image_size).clamp_(0.0, 1.0)


def _stripes(phase_HW: torch.Tensor, period: float, image_size: int) -> torch.Tensor:
    """Square-wave stripes of the given period along a coordinate, as a soft mask."""
    wave_HW = torch.sin(2 * math.pi * phase_HW / period)
    return (0.5 + wave_HW * period * image_size / (2 * math.pi)).clamp_(0.0, 1.0)


def render_pattern(class_index: int, image_size: int, generator: torch.Generator) -> torch.Tensor:
    """Foreground coverage mask (H, W) in [0, 1] of one sample of class `class_index`."""
    coordinates = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    y_HW, x_HW = torch.meshgrid(coordinates, coordinates, indexing="ij")
    center_x, center_y = _uniform(generator, 0.3, 0.7), _uniform(generator, 0.3, 0.7)
    size = _uniform(generator, 0.15, 0.28)  # radius or half-width, as a fraction of the image
    period = _uniform(generator, 0.12, 0.25)
    offset = _uniform(generator, 0.0, 1.0)  # phase of periodic patterns, in periods
    angle = _uniform(generator, 0.0, 2 * math.pi)
    dx_HW, dy_HW = x_HW - center_x, y_HW - center_y
    distance_HW = torch.sqrt(dx_HW**2 + dy_HW**2)
    name = PROCEDURAL_CLASSES[class_index]
    if name == "circle":
        return _soft_mask(size - distance_HW, image_size)
    if name == "square":
        return _soft_mask(0.85 * size - torch.maximum(dx_HW.abs(), dy_HW.abs()), image_size)
    if name == "triangle":  # pointing up; the minimum over three edges of the distance to the edge's inner side
        radius = 1.45 * size  # of the circumscribed circle; gives about the area of the circle class
        corner_angles = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        corners = [(radius * math.cos(angle), radius * math.sin(angle)) for angle in corner_angles]
        inside_HW = torch.full_like(x_HW, float("inf"))
        for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
            normal_x, normal_y = -(by - ay), bx - ax  # points inward for this corner order (image y grows down)
            length = math.hypot(normal_x, normal_y)
            inside_HW = torch.minimum(inside_HW, ((dx_HW - ax) * normal_x + (dy_HW - ay) * normal_y) / length)
        return _soft_mask(inside_HW, image_size)
    if name == "horizontal stripes":
        return _stripes(y_HW + offset * period, period, image_size)
    if name == "vertical stripes":
        return _stripes(x_HW + offset * period, period, image_size)
    if name == "checkerboard":
        row_HW = _stripes(y_HW + offset * period, 2 * period, image_size)
        column_HW = _stripes(x_HW + offset * period, 2 * period, image_size)
        return row_HW * (1 - column_HW) + (1 - row_HW) * column_HW
    if name == "ring":
        return _soft_mask(0.28 * size - (distance_HW - size).abs(), image_size)
    if name == "cross":
        arm_a_HW = torch.minimum(0.3 * size - dx_HW.abs(), 1.1 * size - dy_HW.abs())
        arm_b_HW = torch.minimum(0.3 * size - dy_HW.abs(), 1.1 * size - dx_HW.abs())
        return _soft_mask(torch.maximum(arm_a_HW, arm_b_HW), image_size)
    if name == "diagonal stripes":  # falling to the right
        return _stripes((x_HW - y_HW) / math.sqrt(2) + offset * period, period, image_size)
    if name == "gradient":  # linear ramp across the image in a random direction
        along_HW = (x_HW - 0.5) * math.cos(angle) + (y_HW - 0.5) * math.sin(angle)
        return (0.5 + along_HW * 1.4).clamp_(0.0, 1.0)
    raise ValueError(f"unknown class index {class_index}")


class ProceduralShapes(ImageDataset):
    """`num_samples` images of `num_classes` pattern classes; label = index % num_classes (balanced)."""

    def __init__(self, num_samples: int, image_size: int, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        if not 1 <= num_classes <= len(PROCEDURAL_CLASSES):
            raise UsageError(f"num_classes must be in 1..{len(PROCEDURAL_CLASSES)}, got {num_classes}")
        if num_samples <= 0 or image_size <= 0:
            raise UsageError(f"num_samples and image_size must be positive, got {num_samples} and {image_size}")
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.classes = PROCEDURAL_CLASSES[:num_classes]

    def __len__(self) -> int:
        return self.num_samples

    def load(self, index: int, epoch: int) -> tuple[torch.Tensor, int]:
        """The sample depends on (seed, index) only; `epoch` is accepted for the common interface and ignored."""
        label = index % self.num_classes
        generator = sample_generator(self.seed, index)
        background_3 = 0.45 * torch.rand(3, generator=generator)
        foreground_3 = 0.55 + 0.45 * torch.rand(3, generator=generator)
        mask_HW = render_pattern(label, self.image_size, generator)
        image_3HW = background_3[:, None, None] + (foreground_3 - background_3)[:, None, None] * mask_HW
        return image_3HW.mul_(2.0).sub_(1.0), label
