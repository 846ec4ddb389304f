"""Editing helpers (box and mask-picture keep masks, the strip) and what an edit keeps: the input's tokens at every
scale where the mask says so, and with nothing to regenerate exactly the tokenizer's reconstruction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nextscale.editing import (
    box_mask,
    edit,
    edit_strip,
    fit_image,
    keep_mask_for,
    keep_masks_per_scale,
    mask_from_image,
)
from nextscale.pipeline import Pipeline
from nextscale.sampling import SamplingSettings, sample_scales


def _images(seed: int, batch: int = 2, size: int = 8) -> torch.Tensor:
    """Smooth random images in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 2, 2, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _scale_keep(keep_mask: torch.Tensor, side: int) -> torch.Tensor:
    """The notebook's per-scale rule, written out independently: bilinear resize, > 0.5, the 1×1 scale kept."""
    if side * side <= 3:
        return torch.ones(side, side, dtype=torch.bool)
    resized = F.interpolate(keep_mask[None, None].float(), size=(side, side), mode="bilinear", align_corners=False)
    return resized[0, 0] > 0.5


# ---- masks ----------------------------------------------------------------------------------------------------------


def test_box_mask_rounds_like_the_official_notebook():
    mask = box_mask(16, 0.1, 0.1, 0.8, 0.8)  # the notebook's demo box
    expected = torch.zeros(16, 16)
    expected[2:13, 2:13] = 1  # round(1.6) = 2, round(12.8) = 13
    assert torch.equal(mask, expected)
    assert torch.equal(
        box_mask(4, 0.0, 0.5, 0.5, 1.0), torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0] * 4])
    )


@pytest.mark.parametrize(
    "box", [(-0.1, 0, 0.5, 0.5), (0, 0, 1.2, 1), (0.5, 0, 0.5, 1), (0.6, 0, 0.5, 1), (0, 0.7, 1, 0.2)]
)
def test_box_mask_rejects_coordinates_outside_the_unit_square_or_reversed(box):
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
        box_mask(16, *box)


def test_keep_mask_per_mode():
    box = (0.25, 0.25, 0.75, 0.75)
    inside = box_mask(4, *box)
    assert torch.equal(keep_mask_for("inpaint", side=4, box=box), 1 - inside)
    assert torch.equal(keep_mask_for("class-edit", side=4, box=box), 1 - inside)
    assert torch.equal(keep_mask_for("outpaint", side=4, box=box), inside)
    with pytest.raises(ValueError, match="unknown edit mode"):
        keep_mask_for("recolour", side=4, box=box)
    with pytest.raises(ValueError, match="either a box or a mask"):
        keep_mask_for("inpaint", side=4)


@pytest.mark.parametrize(
    "mode, box, message",
    [
        ("inpaint", (0, 0, 0.05, 0.05), "nothing to regenerate"),  # rounds to no token on a 4×4 grid
        ("outpaint", (0, 0, 1, 1), "nothing to regenerate"),
        ("outpaint", (0, 0, 0.05, 0.05), "nothing kept"),
        ("class-edit", (0, 0, 1, 1), "nothing kept"),
    ],
)
def test_keep_mask_refuses_edits_that_change_nothing_or_keep_nothing(mode, box, message):
    with pytest.raises(ValueError, match=message):
        keep_mask_for(mode, side=4, box=box)


def test_mask_picture_is_area_averaged_and_thresholded_at_half():
    pixels = torch.zeros(10, 10, dtype=torch.uint8)  # 2×2 token grid: 5×5 pixels per token
    pixels[0:3, 0:5] = 255  # 15 of 25 pixels of token (0, 0): 0.6 → regenerate
    pixels[5:7, 5:10] = 255  # 10 of 25 pixels of token (1, 1): 0.4 → keep
    picture = Image.fromarray(pixels.numpy(), mode="L")
    assert torch.equal(mask_from_image(picture, 2), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    keep = keep_mask_for("inpaint", side=2, mask_image=picture)
    assert torch.equal(keep, torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    assert torch.equal(keep_mask_for("outpaint", side=2, mask_image=picture), keep)  # white always regenerates


def test_mask_picture_must_be_square_or_the_input_size():
    wide = Image.new("L", (12, 8), 0)
    wide.paste(255, (2, 0, 10, 4))  # the centre crop (2…10) keeps the white top half
    with pytest.raises(ValueError, match="must be square or 12×8"):
        mask_from_image(Image.new("L", (10, 6)), 4, image_size=(12, 8))
    with pytest.raises(ValueError, match="must be square"):
        mask_from_image(wide, 4)
    regenerate = mask_from_image(wide, 2, image_size=(12, 8))
    assert torch.equal(regenerate, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


def test_fit_image_centre_crops_then_resizes():
    picture = Image.new("RGB", (30, 10), (255, 0, 0))
    picture.paste((0, 0, 255), (10, 0, 20, 10))  # the centre square is blue
    fitted, changed = fit_image(picture, 8)
    assert changed and fitted.size == (8, 8)
    assert fitted.getpixel((4, 4)) == (0, 0, 255)
    same, changed = fit_image(fitted, 8)
    assert same is fitted and not changed


def test_edit_strip_shows_input_tinted_region_and_results():
    source = torch.full((3, 8, 8), 0.5)
    keep = keep_mask_for("inpaint", side=4, box=(0.0, 0.0, 0.5, 0.5))  # regenerate the top-left quarter
    results = torch.zeros(2, 3, 8, 8)
    strip = edit_strip(source, keep, results)
    panel, pad = 8 * 16, 2  # 8-px images are enlarged 16×
    assert strip.size == (4 * (panel + pad) + pad, panel + 2 * pad)
    left_of_mask_panel = pad + panel + pad
    tinted = strip.getpixel((left_of_mask_panel + 10, pad + 10))
    untouched = strip.getpixel((left_of_mask_panel + panel - 10, pad + panel - 10))
    assert untouched == (128, 128, 128)
    assert tinted != untouched and tinted[0] > tinted[1] and sum(tinted) < sum(untouched)


# ---- what an edit keeps ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["inpaint", "outpaint"])
def test_kept_tokens_equal_the_input_tokens_at_every_scale(debug_models, mode):
    tokenizer, model = debug_models
    images = _images(seed=1)
    keep = keep_mask_for(mode, side=4, box=(0.25, 0.25, 0.75, 1.0))
    out = edit(model, tokenizer, images, keep, seed=0, cfg=1.5, top_k=0, top_p=0.0, trace=True)
    given = tokenizer.encode(images)
    regenerated_somewhere = False
    for k, side in enumerate(model.schedule.patch_nums):
        kept_hw = _scale_keep(keep, side).expand(images.shape[0], -1, -1)
        assert torch.equal(out.token_maps[k][kept_hw], given[k][kept_hw]), f"scale {k}"
        drawn_Bhw = out.trace["drawn"][k].view(-1, side, side)
        assert torch.equal(out.token_maps[k][~kept_hw], drawn_Bhw[~kept_hw]), f"scale {k}"
        regenerated_somewhere |= bool((~kept_hw).any())
    assert regenerated_somewhere
    # the image is the decoding of exactly these tokens (f̂ was built from them)
    assert torch.allclose((tokenizer.decode(out.token_maps) + 1) / 2, out.images, atol=1e-5)


def force_every_token(model, tokenizer, images, labels, settings, seed):
    """The sampler with every token forced to the input's (what an all-ones keep mask would mean; `edit` refuses
    such a mask as no edit, so the mechanism is checked through the sampler core)."""
    B, side = images.shape[0], model.schedule.final_side
    masks = keep_masks_per_scale(torch.ones(side, side), B, model.schedule.patch_nums)
    labels_B = torch.full((B,), labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    return sample_scales(
        model, tokenizer, labels_B, settings, generator=generator, forced=(tokenizer.encode(images), masks)
    )


def test_forcing_every_token_gives_the_tokenizer_reconstruction(debug_models):
    tokenizer, model = debug_models
    images = _images(seed=2)
    settings = SamplingSettings(cfg=4.0, top_k=5, more_smooth=True)
    out = force_every_token(model, tokenizer, images, 3, settings, seed=0)
    reconstruction = (tokenizer.decode(tokenizer.encode(images)) + 1) / 2
    assert (out.images - reconstruction).abs().max() < 1e-4


def test_forcing_every_token_on_the_official_format_fixture(tiny_a):
    size = tiny_a.tokenizer.config.image_size
    images = _images(seed=3, batch=1, size=size)
    out = force_every_token(tiny_a.model, tiny_a.tokenizer, images, 10, SamplingSettings(), seed=0)
    reconstruction = (tiny_a.tokenizer.decode(tiny_a.tokenizer.encode(images)) + 1) / 2
    assert (out.images - reconstruction).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("keep", "message"), [(torch.ones(4, 4), "nothing to regenerate"), (torch.zeros(4, 4), "nothing kept")]
)
def test_edit_refuses_masks_that_keep_all_or_nothing(debug_models, keep, message):
    tokenizer, model = debug_models
    with pytest.raises(ValueError, match=message):
        edit(model, tokenizer, _images(seed=2), keep, labels=3, seed=0)
    per_image = torch.stack([torch.eye(4), keep])  # one image fine, the other not: refused as well
    with pytest.raises(ValueError, match=message):
        edit(model, tokenizer, _images(seed=2), per_image, labels=3, seed=0)


def test_pipeline_edit_with_a_box_keeps_the_tokens_outside_it(debug_models):
    tokenizer, model = debug_models
    pipe = Pipeline(tokenizer, model)
    images01 = (_images(seed=4, batch=1) + 1) / 2
    box = (0.0, 0.0, 0.5, 1.0)
    out = pipe.edit(images01, box=box, mode="class-edit", labels=2, samples=3, seed=0, output_type="generation")
    assert out.images.shape == (3, 3, 8, 8)
    assert torch.equal(out.labels, torch.full((3,), 2))
    finest = tokenizer.encode(images01.mul(2).sub(1))[-1].expand(3, -1, -1)
    kept = (1 - box_mask(4, *box)).bool().expand(3, -1, -1)
    assert torch.equal(out.token_maps[-1][kept], finest[kept])
    with pytest.raises(ValueError, match="class-edit.*needs a class"):
        pipe.edit(images01, box=box, mode="class-edit")
