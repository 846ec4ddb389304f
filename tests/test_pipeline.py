"""Pipeline: a saved directory or official checkpoints → the same tokens as `generate`, class names, output types,
dtype and settings handling."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import debug_pair
from PIL import Image

from nextscale import save_pretrained
from nextscale.pipeline import Pipeline
from nextscale.sampling import SAMPLING_PRESETS, generate

DEFAULT_SETTINGS = SAMPLING_PRESETS["demo"]

CLASS_NAMES = [f"thing {i}" for i in range(10)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(directory, tokenizer, model): the debug pair saved with class names."""
    tokenizer, model = debug_pair(seed=5)
    directory = save_pretrained(tmp_path_factory.mktemp("pipe") / "model", tokenizer, model, {"classes": CLASS_NAMES})
    return directory, tokenizer, model


def test_round_trip_from_a_saved_directory_gives_generate_tokens(saved):
    directory, tokenizer, model = saved
    pipe = Pipeline.from_pretrained(directory, settings="fid")
    assert (pipe.num_classes, pipe.image_size, pipe.token_side) == (10, 8, 4)
    assert pipe.class_names == CLASS_NAMES and pipe.source == str(directory)
    out = pipe.generate([1, "thing 7", 3], seed=11, output_type="generation")
    reference = generate(model, tokenizer, [1, 7, 3], seed=11, **vars_of(SAMPLING_PRESETS["fid"]))
    assert torch.equal(out.labels, torch.tensor([1, 7, 3]))
    for ours, theirs in zip(out.token_maps, reference.token_maps):
        assert torch.equal(ours, theirs)
    assert torch.equal(out.images, reference.images)


def test_overrides_change_only_what_they_name(saved):
    directory, tokenizer, model = saved
    pipe = Pipeline.from_pretrained(directory)
    assert pipe.settings == DEFAULT_SETTINGS
    assert pipe.settings_with(cfg=2.0, more_smooth=True) == replace(DEFAULT_SETTINGS, cfg=2.0, more_smooth=True)
    assert pipe.settings_with("fid", top_k=None) == SAMPLING_PRESETS["fid"]  # None leaves a field as it is
    images = pipe.generate(4, batch_size=2, seed=0, cfg=0.0, top_k=3)
    reference = generate(model, tokenizer, 4, batch_size=2, seed=0, cfg=0.0, top_k=3, top_p=DEFAULT_SETTINGS.top_p)
    assert torch.equal(images, reference.images)
    with pytest.raises(ValueError, match="top_p"):
        pipe.generate(0, seed=0, top_p=1.5)
    with pytest.raises(ValueError, match="unknown sampling preset"):
        Pipeline(tokenizer, model, settings="sharpest")


def test_output_types_class_names_and_errors(saved):
    directory, _, _ = saved
    pipe = Pipeline.from_pretrained(directory)
    pictures = pipe.generate(["thing 2", "thing 2"], seed=1, output_type="pil")
    assert len(pictures) == 2 and all(isinstance(p, Image.Image) and p.size == (8, 8) for p in pictures)
    images = pipe.generate(2, batch_size=2, seed=1)
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    pixels_BHW3 = torch.from_numpy(np.stack([np.array(p) for p in pictures]))
    assert torch.equal(pixels_BHW3, images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="unknown class name 'thing 99'"):
        pipe.generate("thing 99")
    with pytest.raises(ValueError, match="output_type"):
        pipe.generate(0, output_type="numpy")
    with pytest.raises(ValueError, match="3 class names for 10 classes"):
        Pipeline(pipe.tokenizer, pipe.model, class_names=["a", "b", "c"])


def test_dtype_selects_autocast_and_to_moves(saved):
    directory, _, _ = saved
    pipe = Pipeline.from_pretrained(directory, dtype="bf16")
    assert pipe.dtype == torch.bfloat16 and pipe.autocast_dtype == torch.bfloat16
    images = pipe.generate(1, batch_size=2, seed=0)
    assert images.dtype == torch.float32 and images.shape == (2, 3, 8, 8)
    assert next(pipe.model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast
    assert pipe.to("cpu") is pipe and pipe.device == torch.device("cpu")
    assert Pipeline.from_pretrained(directory).autocast_dtype is None
    with pytest.raises(ValueError, match="dtype must be one of"):
        Pipeline.from_pretrained(directory, dtype="int8")


def test_from_official_and_pil_edit_of_another_size(tiny_a):
    pipe = Pipeline.from_official(tiny_a.vae_path, tiny_a.var_path)
    assert (pipe.num_classes, pipe.image_size) == (tiny_a.model.num_classes, 64)
    assert pipe.source.startswith("official: ")
    picture = Image.new("RGB", (96, 80), (200, 30, 30))
    out = pipe.edit(picture, box=(0.0, 0.0, 0.5, 0.5), seed=0, output_type="pil")
    assert len(out) == 1 and out[0].size == (64, 64)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, 64, 64\)"):
        pipe.edit(torch.rand(3, 32, 32), box=(0.0, 0.0, 0.5, 0.5))


def test_from_pretrained_needs_both_parts(tmp_path):
    tokenizer, _ = debug_pair()
    save_pretrained(tmp_path / "tok", tokenizer)
    with pytest.raises(ValueError, match="needs both"):
        Pipeline.from_pretrained(tmp_path / "tok")


def vars_of(settings) -> dict:
    return {"cfg": settings.cfg, "top_k": settings.top_k, "top_p": settings.top_p, "more_smooth": settings.more_smooth}


def test_a_pipeline_with_a_refiner_hands_over_at_the_settings_scale(make_debug_pair):
    from nextscale import Pipeline, generate

    tokenizer, drafter = make_debug_pair(0)
    _, refiner = make_debug_pair(1)
    pipe = Pipeline(tokenizer, drafter, "fid", refiner=refiner)
    direct = generate(drafter, tokenizer, [0, 3], "fid", seed=2, refiner=refiner, handover_scale=2)
    assert torch.equal(pipe.generate([0, 3], seed=2, handover_scale=2), direct.images)
    assert not torch.equal(pipe.generate([0, 3], seed=2), direct.images)  # handover_scale 0: the drafter alone


def test_a_fast_bf16_pipeline_casts_the_refiner_with_the_drafter(make_debug_pair):
    from nextscale import Pipeline

    tokenizer, drafter = make_debug_pair(0)
    _, refiner = make_debug_pair(1)
    Pipeline(tokenizer, drafter, "fid", dtype=torch.bfloat16, fast=True, refiner=refiner)
    assert {p.dtype for p in drafter.parameters()} == {p.dtype for p in refiner.parameters()} == {torch.bfloat16}
