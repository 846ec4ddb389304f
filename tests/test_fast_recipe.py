"""A model's measured fast recipe (nextscale.json "fast"): `--fast` and `Pipeline.from_pretrained(fast=True)` apply its
sampling changes on top of the model's own settings and its int8 quantisation on a CPU in fp32; flags still win,
and a damaged recipe is refused when the directory is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import debug_pair

from nextscale import save_pretrained
from nextscale.cli import main
from nextscale.pipeline import Pipeline
from nextscale.pretrained import read_metadata
from nextscale.quantization import is_quantized
from nextscale.weights import CheckpointError

SAMPLING = {"cfg": 1.5, "top_k": 5, "top_p": 0.0, "more_smooth": False, "prune_ratio": 0.0, "prune_scales": 2}
FAST = {"sampling": {"guidance_scales": 2}, "quantize": "int8", "measured": "a test"}


def _model(tmp_path: Path, **metadata) -> Path:
    return save_pretrained(tmp_path / "model", *debug_pair(seed=2), metadata={"sampling": SAMPLING, **metadata})


def test_from_pretrained_fast_applies_the_recorded_recipe(tmp_path: Path):
    directory = _model(tmp_path, fast=FAST)
    plain = Pipeline.from_pretrained(directory)
    assert plain.settings.guidance_scales == 0 and not is_quantized(plain.model.blocks[0].mlp.fc1)
    fast = Pipeline.from_pretrained(directory, fast=True)
    assert fast.settings.guidance_scales == 2 and fast.settings.top_k == 5  # the recipe on the model's own settings
    assert is_quantized(fast.model.blocks[0].mlp.fc1) and fast.fast
    in_bf16 = Pipeline.from_pretrained(directory, fast=True, dtype=torch.bfloat16)
    assert in_bf16.settings.guidance_scales == 2 and not is_quantized(in_bf16.model.blocks[0].mlp.fc1)
    without_recipe = Pipeline.from_pretrained(_model(tmp_path / "other"), fast=True)
    assert without_recipe.settings.guidance_scales == 0 and not is_quantized(without_recipe.model.blocks[0].mlp.fc1)


def test_the_demo_loads_a_fast_model_with_its_recipe_and_a_refiner(tmp_path: Path):
    from nextscale.demo.model import ModelSource

    directory = _model(tmp_path, fast=FAST)
    refiner = save_pretrained(tmp_path / "refiner", *debug_pair(seed=3))
    demo = ModelSource(model=str(directory), fast=True, refiner=str(refiner)).load()
    pipeline = demo.pipeline
    assert pipeline.settings.guidance_scales == 2 and is_quantized(pipeline.model.blocks[0].mlp.fc1)
    assert pipeline.refiner is not None and is_quantized(pipeline.refiner.blocks[0].mlp.fc1)  # both transformers
    plain = ModelSource(model=str(directory)).load().pipeline
    assert plain.settings.guidance_scales == 0 and plain.refiner is None


def test_the_command_lines_fast_flag_applies_the_recipe_under_the_flags_given(tmp_path: Path):
    directory = _model(tmp_path, fast=FAST)
    base = ["sample-set", "--model", str(directory), "--device", "cpu", "--no-progress", "--per-class", "1",
            "--classes", "0-1", "--batch-size", "2"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "fast"), "--fast"]) == 0
    recorded = json.loads((tmp_path / "fast" / "settings.json").read_text())
    assert recorded["quantize"] == "int8" and recorded["sampling"]["guidance_scales"] == 2
    assert main([*base, "--out", str(tmp_path / "flag"), "--fast", "--guidance-scales", "3"]) == 0
    assert json.loads((tmp_path / "flag" / "settings.json").read_text())["sampling"]["guidance_scales"] == 3


@pytest.mark.parametrize(
    "fast", [["int8"], {"sampling": {"guidance_scales": -1}}, {"quantize": "int4"}, {"sampling": {"speed": 2}}]
)
def test_a_damaged_recipe_is_refused(tmp_path: Path, fast):
    directory = _model(tmp_path, fast=FAST)
    meta = json.loads((directory / "nextscale.json").read_text())
    (directory / "nextscale.json").write_text(json.dumps({**meta, "fast": fast}))
    with pytest.raises(CheckpointError, match="fast"):
        read_metadata(directory)
