"""The API's JSON bodies, checked into typed requests before any work starts.

Every mistake a user (or a hand-written client) can make becomes a `DemoRequestError` with a one-line message and an
HTTP status (400, or 413 for a body too large), which the page shows as it is. The checks are strict: unknown fields,
wrong types, out-of-range numbers and empty selections are refused rather than guessed at.

Sampling: `classes` (ids or names) × `per_class` images, drawn in that order (class-major, as `nextscale sample`);
with a refiner loaded, `handover_scale` k > 0 lets it draw the scales from k on (the model drafts the ones before).
Editing: `region` is the drawn area on the finest token grid (side × side of 0/1, 1 = drawn). In-painting and
class-conditional editing regenerate the drawn area; out-painting keeps it and regenerates the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from PIL import Image

from nextscale.demo.model import DemoModel
from nextscale.demo.pngs import ImageDecodeError, data_url_to_pil
from nextscale.edit_modes import EDIT_MODES
from nextscale.errors import UsageError
from nextscale.sampling import SamplingSettings

SEED_MAX = 2**32 - 1  # seeds stay exact in JavaScript numbers and short in a command line


class DemoRequestError(UsageError):
    """A bad request: `status` is the HTTP status to answer with, the message is shown on the page."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DemoLimits:
    """What one request may ask of this server."""

    max_images: int = 16  # images per request (samples, or edit results)
    max_cfg: float = 20.0  # guidance above this only saturates the images
    max_top_k: int = 1_000_000  # larger than any vocabulary; 0 keeps every token
    max_prune_ratio: float = 0.95  # token pruning at the largest scales (SamplingSettings.prune_ratio must be < 1)
    max_body_bytes: int = 8 * 1024 * 1024  # request bodies (an uploaded image travels as base64 inside one)

    def __post_init__(self) -> None:
        if self.max_images < 1 or self.max_cfg < 0 or self.max_body_bytes < 1024:
            raise UsageError(f"invalid demo limits {self}")


@dataclass(frozen=True)
class SampleRequest:
    classes: list[int]  # as chosen, each drawn per_class times
    per_class: int
    seed: int
    settings: SamplingSettings
    previews: bool  # stream the partial decodes after each scale

    @property
    def labels(self) -> list[int]:
        return [c for c in self.classes for _ in range(self.per_class)]


@dataclass(frozen=True)
class EditRequest:
    image: Image.Image  # RGB, any size (fitted to the model by the engine)
    region_hw: torch.Tensor  # (side, side) float, 1 = drawn by the user
    mode: str  # one of EDIT_MODES
    label: int | None  # the class steering the regenerated area; None = unconditional
    samples: int
    seed: int
    settings: SamplingSettings
    previews: bool

    @property
    def regenerate_hw(self) -> torch.Tensor:
        """(side, side) 1 where tokens are regenerated: the drawn area, or for out-painting everything else."""
        return 1.0 - self.region_hw if self.mode == "outpaint" else self.region_hw


# ---- parsing ------------------------------------------------------------------------------------------------------


def _check_fields(body, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(body, dict):
        raise DemoRequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise DemoRequestError(f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(allowed)}")
    missing = [name for name in required if name not in body]
    if missing:
        raise DemoRequestError(f"missing field(s) {', '.join(missing)}")
    return body


def _shown(value) -> str:
    return "nothing" if value is None else repr(value)


def _integer(body: dict, name: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(name, default)
    integral = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not integral or not low <= value <= high:
        raise DemoRequestError(f"{name} must be an integer in [{low}, {high}], got {_shown(value)}")
    return int(value)


def _number(body: dict, name: str, low: float, high: float, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DemoRequestError(f"{name} must be a number in [{low:g}, {high:g}], got {_shown(value)}")
    if not low <= value <= high:
        raise DemoRequestError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")
    return float(value)


def _boolean(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise DemoRequestError(f"{name} must be true or false, got {_shown(value)}")
    return value


def _class_id(model: DemoModel, value, name: str) -> int:
    """A class id or a class name → the id, within [0, num_classes)."""
    try:
        return model.class_index(value)
    except ValueError as err:
        raise DemoRequestError(f"{name}: {err}") from None


_SETTINGS_FIELDS = (
    "cfg", "top_k", "top_p", "more_smooth", "prune_ratio", "prune_scales", "guidance_scales", "inverse_cdf",
)  # fmt: skip


def _settings(body: dict, base: SamplingSettings, limits: DemoLimits, num_scales: int) -> SamplingSettings:
    """`base` with the fields the request gives; every field is range-checked here, before any work."""
    changes = dict(
        cfg=_number(body, "cfg", 0.0, limits.max_cfg, base.cfg),
        top_k=_integer(body, "top_k", 0, limits.max_top_k, base.top_k),
        top_p=_number(body, "top_p", 0.0, 1.0, base.top_p),
        more_smooth=_boolean(body, "more_smooth", base.more_smooth),
        prune_ratio=_number(body, "prune_ratio", 0.0, limits.max_prune_ratio, base.prune_ratio),
        prune_scales=_integer(body, "prune_scales", 1, num_scales, min(base.prune_scales, num_scales)),
        guidance_scales=_integer(body, "guidance_scales", 0, num_scales, min(base.guidance_scales, num_scales)),
        inverse_cdf=_boolean(body, "inverse_cdf", base.inverse_cdf),
    )
    try:
        return replace(base, **changes)
    except ValueError as err:  # a rule of SamplingSettings' own that the checks above do not know
        raise DemoRequestError(str(err)) from None


def _handover(body: dict, model: DemoModel, settings: SamplingSettings) -> SamplingSettings:
    """`settings` with the request's `handover_scale`: in [0, number of scales] (the number of scales: never hands
    over), and above 0 only when a refiner is loaded."""
    num_scales = len(model.scale_sides)
    handover = _integer(body, "handover_scale", 0, num_scales, min(settings.handover_scale, num_scales))
    if handover > 0 and not model.has_refiner:
        raise DemoRequestError(
            f"handover_scale {handover} needs a refiner model, and this demo runs without one "
            "(start it with --refiner DIR, or send handover_scale 0)"
        )
    return replace(settings, handover_scale=handover)


def parse_sample(body, model: DemoModel, defaults: SamplingSettings, limits: DemoLimits) -> SampleRequest:
    # handover_scale is for sampling only: edits draw with the model alone
    fields = ("classes", "per_class", "seed", "previews", *_SETTINGS_FIELDS, "handover_scale")
    body = _check_fields(body, fields, required=("classes",))
    chosen = body["classes"]
    if not isinstance(chosen, list) or not chosen:
        raise DemoRequestError("classes must be a non-empty list of class ids or names; choose at least one class")
    classes = [_class_id(model, value, "classes") for value in chosen]
    per_class = _integer(body, "per_class", 1, limits.max_images, 1)
    if len(classes) * per_class > limits.max_images:
        raise DemoRequestError(
            f"{len(classes)} class(es) × {per_class} = {len(classes) * per_class} images asked; this server draws at "
            f"most {limits.max_images} per request"
        )
    return SampleRequest(
        classes=classes,
        per_class=per_class,
        seed=_integer(body, "seed", 0, SEED_MAX, 0),
        settings=_handover(body, model, _settings(body, defaults, limits, len(model.scale_sides))),
        previews=_boolean(body, "previews", True),
    )


def parse_region(value, side: int) -> torch.Tensor:
    """side × side nested lists of 0/1 → a float tensor; refuses other shapes and values."""
    shape_message = f"region must be a {side}×{side} grid of 0/1 (the finest token grid; 1 = drawn)"
    if not isinstance(value, list) or len(value) != side:
        raise DemoRequestError(shape_message)
    for row in value:
        if not isinstance(row, list) or len(row) != side:
            raise DemoRequestError(shape_message)
        if any(isinstance(v, bool) or v not in (0, 1) for v in row):
            raise DemoRequestError(shape_message)
    return torch.tensor(value, dtype=torch.float32)


def parse_edit(body, model: DemoModel, defaults: SamplingSettings, limits: DemoLimits) -> EditRequest:
    fields = ("image", "region", "mode", "class", "samples", "seed", "previews", *_SETTINGS_FIELDS)
    body = _check_fields(body, fields, required=("image", "region"))
    mode = body.get("mode", "inpaint")
    if mode not in EDIT_MODES:
        raise DemoRequestError(f"mode must be one of {', '.join(EDIT_MODES)}, got {mode!r}")
    label = body.get("class")
    label = None if label is None else _class_id(model, label, "class")
    if mode == "class-edit" and label is None:
        raise DemoRequestError("class-conditional editing needs a class to edit the region towards")
    region_hw = parse_region(body["region"], model.token_side)
    drawn = int(region_hw.sum().item())
    if drawn == 0:
        raise DemoRequestError("draw a region on the image first (brush or box)")
    if drawn == region_hw.numel():
        raise DemoRequestError("the region covers the whole image; leave part of it to keep")
    try:
        image = data_url_to_pil(body["image"], "the image")
    except ImageDecodeError as err:
        raise DemoRequestError(str(err)) from None
    return EditRequest(
        image=image,
        region_hw=region_hw,
        mode=mode,
        label=label,
        samples=_integer(body, "samples", 1, limits.max_images, 1),
        seed=_integer(body, "seed", 0, SEED_MAX, 0),
        settings=_settings(body, defaults, limits, len(model.scale_sides)),
        previews=_boolean(body, "previews", True),
    )


def parse_upload(body) -> Image.Image:
    body = _check_fields(body, ("image",), required=("image",))
    try:
        return data_url_to_pil(body["image"], "the upload")
    except ImageDecodeError as err:
        raise DemoRequestError(str(err)) from None
