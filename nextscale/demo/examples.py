"""Test images to edit, offered on the page next to the upload button.

A model directory written by `nextscale train` records its data in `nextscale.json` (`trained_with.data`, a
`DataConfig`). When that data is on this machine (Fashion-MNIST where training read it or from its Debian package
`dataset-fashion-mnist`, the built-in procedural set, an image folder that still exists), the first test image of
each class is offered. Otherwise (official checkpoints, data elsewhere) the page offers uploads and the demo's own
samples only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from nextscale.editing import fit_image
from nextscale.images import to_pil

logger = logging.getLogger(__name__)

SCAN_LIMIT = 500  # items looked at to find one image of each class


@dataclass(frozen=True)
class Example:
    name: str  # e.g. "test image 17 (Sneaker)"
    label: int
    image: Image.Image  # RGB, the model's size


def examples_from_metadata(metadata: dict, image_size: int, count: int = 10) -> list[Example]:
    """Up to `count` test images (one per class, in class order) of the data in `metadata['trained_with']['data']`;
    an empty list when the metadata names no data or the data is not on this machine."""
    data = (metadata.get("trained_with") or {}).get("data")
    if not isinstance(data, dict):
        return []
    from nextscale.data.build import DATASETS, DataConfig

    try:
        config = DataConfig(**data)
    except (TypeError, ValueError) as err:
        logger.info("demo: no example images (the recorded data config is not readable here: %s)", err)
        return []
    # where training found the data, then (a named data set recorded with a folder that is gone) its default place
    tries = [config] + ([replace(config, root=None)] if config.root is not None and config.name in DATASETS else [])
    dataset = None
    for candidate, split in ((candidate, split) for candidate in tries for split in ("test", "val")):
        try:
            dataset = candidate.build(split)
            break
        except (FileNotFoundError, ValueError, OSError):
            continue
    if dataset is None:
        where = config.root or config.name
        logger.info("demo: no example images (the %s test data is not at %s)", config.name, Path(where))
        return []
    first_of_class: dict[int, int] = {}
    for index in range(min(len(dataset), SCAN_LIMIT)):
        _, label = dataset[index]
        first_of_class.setdefault(int(label), index)
        if len(first_of_class) >= min(count, dataset.num_classes):
            break
    examples = []
    for label, index in sorted(first_of_class.items())[:count]:
        image_3HW, _ = dataset[index]
        picture = to_pil(image_3HW.add(1).mul(0.5).unsqueeze(0))[0]
        fitted, _ = fit_image(picture, image_size)
        examples.append(Example(f"test image {index} ({dataset.classes[label]})", label, fitted))
    return examples
