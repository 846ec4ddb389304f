"""int8 dynamic quantisation (`quantize="int8"`): the logits stay within a stated distance of fp32's, exactly the
named linears change type, the fp32 default is untouched bit for bit, and the option reaches the Pipeline, the
command line and a sample set's record."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nextscale import Pipeline, generate, save_pretrained
from nextscale.cli import generate as cli_generate
from nextscale.cli import main
from nextscale.errors import UsageError
from nextscale.inference import prepare_for_inference
from nextscale.model.blocks import SelfAttention
from nextscale.quantization import QUANTIZATIONS, _folded_qkv, is_quantized, quantize_linears

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# Tolerances of the int8 logits against fp32's, on the same inputs, in units of the fp32 logits' standard deviation
# (σ). Measured on the seeded debug models (seeds 0-3, x86 engine): 0.003 σ mean and 0.026 σ max of |Δ| (the shipped
# fmnist model: 0.025 σ and 0.3 σ, benchmarks/inference_speed.py). The bounds are about 3× that, for other CPUs'
# int8 kernels; the folding of the qkv biases, whose loss would stay inside them, is checked exactly on its own.
MEAN_TOLERANCE = 0.01
MAX_TOLERANCE = 0.1
QUANTIZED_NAMES = ("attn.fused_qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


@pytest.fixture
def quantized_pair(debug_models):
    tokenizer, model = debug_models
    return prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model), quantize="int8")


def distance_in_sigmas(logits: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    difference = (logits - reference).abs()
    return float(difference.mean() / reference.std()), float(difference.max() / reference.std())


def test_int8_teacher_forced_logits_stay_within_tolerance_of_fp32(debug_models, quantized_pair):
    tokenizer, model = debug_models
    _, quantized = quantized_pair
    samples = generate(model, tokenizer, list(range(10)), "fid", seed=0)
    teacher = tokenizer.teacher_input(samples.token_maps)
    with torch.no_grad():
        reference = model(samples.labels, teacher, drop_labels=False)
        logits = quantized(samples.labels, teacher, drop_labels=False)
    mean, largest = distance_in_sigmas(logits, reference)
    assert 0 < mean <= MEAN_TOLERANCE and largest <= MAX_TOLERANCE, (mean, largest)
    assert logits.dtype == torch.float32


def test_int8_cached_steps_stay_within_tolerance_of_fp32(debug_models, quantized_pair):
    """The sampler's path (KV cache, fused qkv) on the inputs of one fp32 sampling, scale by scale."""
    tokenizer, model = debug_models
    _, quantized = quantized_pair
    samples = generate(model, tokenizer, [1, 5, 9], "fid", seed=1, trace=True)
    inputs = [x.flatten(2).transpose(1, 2) for x in samples.trace["next_input"][:-1]]
    per_model = []
    with torch.no_grad():
        for net in (model, quantized):
            cond_BD = net.class_embed(samples.labels)
            cache, x_BlC, logits = net.new_cache(), net.start_tokens(cond_BD), []
            for k in range(net.schedule.num_scales):
                logits.append(net.step(x_BlC, cond_BD, cache))
                if k < len(inputs):
                    x_BlC = net.scale_tokens(k + 1, inputs[k])
            per_model.append(torch.cat(logits, dim=1))
    mean, largest = distance_in_sigmas(per_model[1], per_model[0])
    assert 0 < mean <= MEAN_TOLERANCE and largest <= MAX_TOLERANCE, (mean, largest)


def test_int8_replaces_exactly_the_named_linears(debug_models):
    _, model = debug_models
    quantized = copy.deepcopy(model)
    names = quantize_linears(quantized)
    expected = [f"blocks.{i}.{name}" for i in range(len(model.blocks)) for name in QUANTIZED_NAMES]
    assert sorted(names) == sorted(expected)
    assert all(is_quantized(quantized.get_submodule(name)) for name in names)
    assert all(not hasattr(block.attn, "qkv") for block in quantized.blocks)  # replaced by the folded one
    # everything else keeps its type and its fp32 weights
    for name, module in quantized.named_modules():
        if name and not any(name == n or name.startswith(n + ".") for n in names):  # (their packed weights inside)
            assert not is_quantized(module), name
            assert type(module) is type(model.get_submodule(name)), name
    for name in ("head", "token_embed", "head_adaln.linear", "blocks.0.adaln.linear"):
        assert type(quantized.get_submodule(name)) is nn.Linear
        assert torch.equal(quantized.get_submodule(name).weight, model.get_submodule(name).weight)
    assert quantize_linears(quantized) == []  # a second call finds nothing left to quantise


def test_the_fp32_default_is_unchanged_bit_for_bit(debug_models):
    tokenizer, model = debug_models
    _, prepared = prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model))
    assert [type(m) for m in prepared.modules()] == [type(m) for m in model.modules()]
    assert all(attention.fused_qkv is None for attention in prepared.modules() if isinstance(attention, SelfAttention))
    reference, prepared_state = model.state_dict(), prepared.state_dict()
    assert list(prepared_state) == list(reference)
    assert all(torch.equal(prepared_state[key], reference[key]) for key in reference)
    samples = generate(model, tokenizer, [0, 3], "fid", seed=2)
    teacher = tokenizer.teacher_input(samples.token_maps)
    with torch.no_grad():
        assert torch.equal(
            prepared(samples.labels, teacher, drop_labels=False), model(samples.labels, teacher, drop_labels=False)
        )


def test_the_folded_qkv_computes_the_biased_projection(debug_models):
    """Before quantisation: the one Linear with the q/v biases folded in is the F.linear path of SelfAttention."""
    _, model = debug_models
    attention = copy.deepcopy(model.blocks[0].attn)
    with torch.no_grad():
        attention.q_bias.normal_()
        attention.v_bias.normal_()
        x_BLC = torch.randn(2, 5, attention.qkv.in_features, generator=torch.Generator().manual_seed(0))
        reference = attention(x_BLC)
        attention.fused_qkv = _folded_qkv(attention)
        torch.testing.assert_close(attention(x_BLC), reference, rtol=1e-6, atol=1e-6)


def test_int8_refuses_what_it_cannot_run(debug_models):
    tokenizer, model = debug_models
    with pytest.raises(UsageError, match="does not combine with torch.bfloat16"):
        prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model), dtype=torch.bfloat16, quantize="int8")
    with pytest.raises(UsageError, match="quantize must be one of int8"):
        prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model), quantize="int4")
    with pytest.raises(UsageError, match="runs on the CPU only"):
        quantize_linears(copy.deepcopy(model).to("meta"))
    with pytest.raises(UsageError, match="needs fp32 weights"):
        quantize_linears(copy.deepcopy(model).to(torch.bfloat16))
    with pytest.raises(UsageError, match="does not combine with torch.bfloat16"):
        Pipeline(copy.deepcopy(tokenizer), copy.deepcopy(model), dtype="bf16", quantize="int8")


def test_a_pipeline_quantizes_its_transformers(debug_models, make_debug_pair):
    tokenizer, model = (copy.deepcopy(m) for m in debug_models)
    _, refiner = make_debug_pair(1)
    pipe = Pipeline(tokenizer, model, "fid", quantize="int8", refiner=refiner)
    assert is_quantized(pipe.model.blocks[0].mlp.fc1) and is_quantized(pipe.refiner.blocks[-1].attn.fused_qkv)
    images = pipe.generate([0, 1, 2], seed=0, handover_scale=2)
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.float32


def test_the_command_line_offers_the_library_quantizations():
    assert cli_generate.QUANTIZATIONS == QUANTIZATIONS


def test_sample_set_with_int8_records_it(tmp_path, capsys):
    from conftest import debug_pair

    save_pretrained(tmp_path / "model", *debug_pair(seed=2))
    out = tmp_path / "set"
    argv = ["sample-set", "--model", str(tmp_path / "model"), "--device", "cpu", "--out", str(out), "--no-progress",
            "--per-class", "1", "--classes", "0-1", "--batch-size", "2", "--quantize", "int8"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "settings.json").read_text())["quantize"] == "int8"
    with pytest.raises(SystemExit):  # the same folder cannot be resumed in fp32
        main(argv[:-2])
    assert 'made with other settings (quantize: "int8" → null)' in capsys.readouterr().err


def test_sample_with_int8_and_bf16_is_one_error_line(tmp_path, capsys):
    from conftest import debug_pair

    save_pretrained(tmp_path / "model", *debug_pair(seed=2))
    argv = ["sample", "--model", str(tmp_path / "model"), "--device", "cpu", "--out", str(tmp_path / "grid.png"),
            "--per-class", "1", "--class", "0"]  # fmt: skip
    assert main([*argv, "--quantize", "int8"]) == 0 and (tmp_path / "grid.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--quantize", "int8", "--bf16"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "does not combine with torch.bfloat16" in lines[0], lines


def test_the_inference_speed_benchmark_runs():
    command = [sys.executable, str(BENCHMARKS / "inference_speed.py"), "--variants", "fp32", "int8",
               "--batch-sizes", "2", "--repeats", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for row in ("batch 2", "transformer", "generate (with decode)", "int8 teacher-forced logits vs fp32"):
        assert row in result.stdout, result.stdout
