"""Zero-shot editing: in-painting, out-painting and class-conditional editing with a trained VAR, no fine-tuning.

The sampler runs as usual, but at every scale the input image's own tokens replace the drawn ones wherever the keep
mask (resized to that scale) says keep, so f̂ and the next scale's input carry the input's content there (the
official `demo_zero_shot_edit` notebook). This module holds all of editing: `edit`, the keep masks (from a box or a
mask picture, checked once here), input images fitted to the model, and a side-by-side strip of the result.

A keep mask lives on the finest token grid (side × side, e.g. 16 × 16 for 256 px): 1 keeps the input image's token,
0 regenerates it (the convention of `nextscale.edit` and the official notebook). The modes:

- `inpaint`: regenerate the box, keep the rest (keep = 1 − box).
- `outpaint`: keep the box, regenerate the outside (keep = box).
- `class-edit`: regenerate the box towards a class (keep = 1 − box; the caller passes the class).

A mask picture instead of a box marks the region to regenerate in white, whatever the mode. Every mask must leave at
least one token to regenerate and one to keep on the finest grid; otherwise it is not an edit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nextscale.edit_modes import EDIT_MODES
from nextscale.errors import UsageError
from nextscale.images import make_grid, to_pil
from nextscale.model.var import VAR
from nextscale.sampling import (
    Generation,
    LabelsLike,
    SamplingSettings,
    ScaleCallback,
    make_generator,
    resolve_labels,
    sample_scales,
)
from nextscale.tokenizer.tokenizer import Tokenizer

_REGENERATED_TINT = (0.45, 0.08, 0.08)  # added to the darkened input where the edit regenerates (a dark red)


def check_box(y0: float, x0: float, y1: float, x1: float) -> None:
    """Coordinates are fractions of the image: 0 ≤ y0 < y1 ≤ 1 and 0 ≤ x0 < x1 ≤ 1."""
    for name, low, high in (("y", y0, y1), ("x", x0, x1)):
        if not 0.0 <= low < high <= 1.0:
            raise UsageError(
                f"box {name}0={low:g}, {name}1={high:g}: coordinates are fractions in [0, 1] with {name}0 < {name}1"
            )


def box_mask(side: int, y0: float, x0: float, y1: float, x1: float) -> torch.Tensor:
    """(side, side) float mask, 1 inside the box: rows round(y0·side):round(y1·side), columns likewise (as the
    official notebook). Coordinates as `check_box` wants them."""
    check_box(y0, x0, y1, x1)
    mask = torch.zeros(side, side)
    mask[round(y0 * side) : round(y1 * side), round(x0 * side) : round(x1 * side)] = 1.0
    return mask


def center_square(image: Image.Image) -> Image.Image:
    """The largest centred square of `image` (the image itself when square)."""
    width, height = image.size
    side = min(width, height)
    if width == height:
        return image
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def fit_image(image: Image.Image, size: int) -> tuple[Image.Image, bool]:
    """Centre-crop to a square and resize (LANCZOS) to size × size. Returns the image and whether it changed."""
    if image.size == (size, size):
        return image, False
    return center_square(image).resize((size, size), Image.Resampling.LANCZOS), True


def mask_from_image(mask_image: Image.Image, side: int, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """A mask picture (white = regenerate) → (side, side) float regenerate mask: grey levels averaged over each token's
    area, thresholded at 0.5. The picture must be square, or the size of the input image (`image_size`, width × height),
    in which case it is centre-cropped as the input is."""
    size = mask_image.size
    if size[0] != size[1] and size != image_size:
        expected = f" or {image_size[0]}×{image_size[1]} like the input image" if image_size else ""
        raise UsageError(f"the mask is {size[0]}×{size[1]}; it must be square{expected}")
    grey = center_square(mask_image.convert("L"))
    values_HW = torch.from_numpy(np.array(grey, dtype=np.uint8))
    area_11HW = F.interpolate(values_HW.float().div(255.0)[None, None], size=(side, side), mode="area")
    return area_11HW[0, 0].gt(0.5).float()


def keep_mask_for(
    mode: str,
    *,
    side: int,
    box: tuple[float, float, float, float] | None = None,
    mask_image: Image.Image | torch.Tensor | None = None,
) -> torch.Tensor:
    """The (side, side) keep mask of an edit, from a box (y0, x0, y1, x1) in fractions, or from a mask: a square
    picture (white = regenerate) or a (side, side) tensor from `mask_from_image` (1 = regenerate). Raises ValueError
    when the edit would regenerate or keep nothing."""
    if mode not in EDIT_MODES:
        raise UsageError(f"unknown edit mode {mode!r}; choose from {', '.join(EDIT_MODES)}")
    if (box is None) == (mask_image is None):
        raise UsageError("give either a box or a mask")
    if box is not None:
        inside = box_mask(side, *box)
        keep = inside if mode == "outpaint" else 1.0 - inside
        what = f"the box {tuple(box)} on the {side}×{side} token grid"
    else:
        regenerate = mask_image if isinstance(mask_image, torch.Tensor) else mask_from_image(mask_image, side)
        if regenerate.shape != (side, side):
            raise UsageError(f"the regenerate mask must be {side}×{side}, got {tuple(regenerate.shape)}")
        keep = 1.0 - regenerate.float()
        what = f"the mask (area-averaged to the {side}×{side} token grid)"
    if keep.min() > 0:
        raise UsageError(f"nothing to regenerate: {what} leaves every token as it is")
    if keep.max() == 0:
        raise UsageError(f"nothing kept: {what} regenerates every token (use `nextscale sample` for new images)")
    return keep


def check_keep_mask(keep_mask: torch.Tensor, side: int, batch_size: int | None = None) -> None:
    """A keep mask is (side, side) or (B, side, side) with values in {0, 1}, keeps at least one token and regenerates
    at least one of every image (otherwise it is not an edit)."""
    if keep_mask.dim() not in (2, 3) or tuple(keep_mask.shape[-2:]) != (side, side):
        raise UsageError(f"keep_mask must be ({side}, {side}) or (B, {side}, {side}), got {tuple(keep_mask.shape)}")
    if keep_mask.dim() == 3 and batch_size is not None and keep_mask.shape[0] != batch_size:
        raise UsageError(f"keep_mask has {keep_mask.shape[0]} masks for {batch_size} images")
    mask = keep_mask.float().reshape(-1, side * side)
    if not torch.all((mask == 0) | (mask == 1)):
        raise UsageError("keep_mask values must be 0 (regenerate) or 1 (keep)")
    if bool((mask.min(dim=1).values > 0).any()):
        raise UsageError("nothing to regenerate: the keep mask keeps every token (1 everywhere)")
    if bool((mask.max(dim=1).values == 0).any()):
        raise UsageError("nothing kept: the keep mask regenerates every token (use generate for new images)")


def keep_masks_per_scale(keep_mask: torch.Tensor, batch_size: int, sides: tuple[int, ...]) -> list[torch.Tensor]:
    """Finest-grid keep mask (h, w) or (B, h, w) → per-scale bool masks (B, 1, h_k, w_k), as the official notebook:
    bilinear resize, threshold 0.5, and the tiny first scales (≤ 3 tokens) always kept."""
    mask = keep_mask.float()
    if mask.dim() == 2:
        mask = mask.unsqueeze(0).expand(batch_size, -1, -1)
    out = []
    for side in sides:
        force = F.interpolate(mask.unsqueeze(1), size=(side, side), mode="bilinear", align_corners=False).gt(0.5)
        if side * side <= 3:
            force.fill_(True)
        out.append(force)
    return out


def edit(
    model: VAR,
    tokenizer: Tokenizer,
    images: torch.Tensor,
    keep_mask: torch.Tensor,
    labels: LabelsLike = None,
    settings: SamplingSettings | str | None = None,
    *,
    seed: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    trace: bool = False,
    on_scale: ScaleCallback | None = None,
    **overrides,
) -> Generation:
    """Zero-shot in-painting, out-painting and class-conditional editing.

    `images` (B, 3, H, W) in [-1, 1]; `keep_mask` on the finest token grid, (h, w) or (B, h, w), 1 = keep the
    image's token, 0 = generate. At every scale the image's tokens are forced where the resized mask keeps (the
    coarsest scale always), the rest is sampled. `labels=None` uses the null class (plain in/out-painting); a class
    edits the generated region towards it. `settings` and keyword overrides as in `nextscale.generate`."""
    settings = SamplingSettings.resolve(settings, **overrides)
    device = model.start_pos.device
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
    B, final = images.shape[0], model.schedule.final_side
    check_keep_mask(keep_mask, final, B)
    generator = make_generator(seed, device)
    labels_B = resolve_labels(model.config.null_class if labels is None else labels, model.num_classes, B, device, None)
    given_maps = tokenizer.encode(images.to(device))
    masks = keep_masks_per_scale(keep_mask.to(device), B, model.schedule.patch_nums)
    return sample_scales(
        model, tokenizer, labels_B, settings, generator=generator, autocast_dtype=autocast_dtype,
        forced=(given_maps, masks), trace=trace, on_scale=on_scale,
    )  # fmt: skip


def edit_strip(input_3HW: torch.Tensor, keep_mask: torch.Tensor, results_N3HW: torch.Tensor) -> Image.Image:
    """One picture, left to right: the input, the input with the regenerated region darkened and tinted, the results.
    Images in [0, 1]; `keep_mask` on the token grid (1 = kept). Tiny images are enlarged for viewing."""
    H, W = input_3HW.shape[-2:]
    regenerate_11HW = F.interpolate(1.0 - keep_mask.float().cpu()[None, None], size=(H, W), mode="nearest")
    tint_311 = torch.tensor(_REGENERATED_TINT).view(3, 1, 1)
    source = input_3HW.float().cpu()
    shown = torch.where(regenerate_11HW[0] > 0.5, source * 0.45 + tint_311, source)
    panels = torch.cat([source[None], shown[None], results_N3HW.float().cpu()])
    return make_grid(panels, columns=panels.shape[0], upscale=max(1, 128 // H))


def save_edit(
    out: str | os.PathLike, input_3HW: torch.Tensor, keep_mask: torch.Tensor, results_N3HW: torch.Tensor
) -> tuple[list[Path], Path]:
    """Write the results (`out` for one, `<stem>_<i><suffix>` for several) and the strip `<stem>_strip<suffix>`.
    Returns (result paths, strip path)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = results_N3HW.shape[0]
    paths = [out] if count == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(count)]
    for path, image in zip(paths, to_pil(results_N3HW)):
        image.save(path)
    strip = out.with_name(f"{out.stem}_strip{out.suffix}")
    edit_strip(input_3HW, keep_mask, results_N3HW).save(strip)
    return paths, strip
