"""`compile=True`: torch.compile of the sampler's per-scale step (not of each block), the same tokens as eager in fp32,
and no combination with int8 (dynamo cannot trace PyTorch's quantised linears)."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from nextscale import Pipeline, generate
from nextscale.errors import UsageError
from nextscale.inference import prepare_for_inference

needs_a_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on the CPU builds C++ kernels and no C++ compiler is installed",
)


def test_compile_wraps_the_per_scale_step_once(debug_models):
    tokenizer, model = debug_models
    _, prepared = prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model), compile=True)
    step_hidden, logits = prepared.step_hidden, prepared.logits
    assert {"step_hidden", "logits"} <= set(vars(prepared))  # instance attributes: the compiled methods
    assert all("forward" not in vars(block) for block in prepared.blocks)  # the blocks run inside the step's graph
    prepare_for_inference(tokenizer, prepared, compile=True)
    assert prepared.step_hidden is step_hidden and prepared.logits is logits  # not wrapped twice


def test_compile_and_int8_are_refused_together(debug_models):
    tokenizer, model = debug_models
    with pytest.raises(UsageError, match="graph break"):
        prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model), compile=True, quantize="int8")
    with pytest.raises(UsageError, match="graph break"):
        Pipeline(copy.deepcopy(tokenizer), copy.deepcopy(model), compile=True, quantize="int8")


def test_a_pipeline_compiles_its_transformers(debug_models, make_debug_pair):
    tokenizer, model = (copy.deepcopy(m) for m in debug_models)
    _, refiner = make_debug_pair(1)
    pipe = Pipeline(tokenizer, model, compile=True, refiner=refiner)
    assert all({"step_hidden", "logits"} <= set(vars(m)) for m in (pipe.model, pipe.refiner))
    assert "step_hidden" not in vars(Pipeline(*(copy.deepcopy(m) for m in debug_models)).model)  # off by default


@needs_a_compiler
def test_compiled_sampling_draws_the_same_tokens_as_eager(debug_models):
    """fp32, the sampler as users run it (guidance, top-k/top-p, the decode): the compiled steps' logits move by float
    rounding only, and the tokens do not move. (About 45 s on two busy cores, nearly all of it compiling.)"""
    tokenizer, model = debug_models
    fast_tokenizer, compiled = prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model), compile=True)
    reference = generate(model, tokenizer, [3, 7], "fid", seed=0, trace=True)
    out = generate(compiled, fast_tokenizer, [3, 7], "fid", seed=0, trace=True)
    assert all(torch.equal(a, b) for a, b in zip(out.token_maps, reference.token_maps))
    for logits, expected in zip(out.trace["logits"], reference.trace["logits"]):
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.images, reference.images, rtol=0, atol=1e-5)
