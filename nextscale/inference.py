"""Fast inference: one switch that prepares a tokenizer and a transformer for sampling, behind which every speed-up
of this library sits. The default (unprepared) models compute exactly what the official code computes.

    tokenizer, model = prepare_for_inference(tokenizer, model, dtype=torch.bfloat16)

What it does:
- `dtype` (bf16/fp16): casts the transformer's weights and the tokenizer's convolutions once, instead of autocast
  re-casting every weight on every call (the official sampler runs under autocast). The quantizer (codebook, φ) stays
  fp32, so f̂ is accumulated in fp32 as before; logits are returned in fp32. Worth it only where the hardware
  multiplies in that precision (GPUs, CPUs with AVX-512 BF16 or AMX); on other CPUs bf16 is far slower than fp32.
- `channels_last`: the tokenizer's convolutions in NHWC layout, which oneDNN (CPU) and cuDNN run faster.
- `quantize="int8"` (CPU, fp32 only): the blocks' linears as PyTorch's dynamically quantised int8 Linears
  (`nextscale.quantization`): a quarter of the weight traffic, int8 products. On the shipped fmnist model, one thread
  of an AVX-512 VNNI CPU (benchmarks/inference_speed.py), the transformer ran 1.8× faster at batch 1 and at batch 100
  (whole sampling with the decode 1.5–1.6×). Its logits move by about 2.5% of their spread on average (a token
  distribution's total variation ≈ 0.03), so it draws other tokens than fp32: an approximation, not the exact path.
  On 500 fid-setting samples (same seeds) the evaluation classifier's accuracy was 94.8% for both, and the Fréchet
  distance of its features between int8 and fp32 0.26, below the 0.85 between two fp32 sets of other seeds.
- `compile`: `torch.compile` of the sampler's per-scale step as a whole (`VAR.step_hidden`: all blocks in one graph;
  and `VAR.logits`; `RasterTransformer.step`), shapes left to dynamo's automatic dynamic, compiled on the first
  sampling (tens of seconds on a CPU). One graph per step rather than one per block: one Python frame per scale
  instead of one per block, and fusions across the blocks' boundaries. Measured as above, the transformer ran 1.15×
  (batch 1) and 1.2× (batch 100) faster than eager, each block compiled alone 1.07× and 1.17×: it pays only where one
  process samples for long (a server), after its compile time. Not with int8: dynamo cannot trace the quantised
  linears (a graph break at each), which ran slower than int8 alone.
Prepared models draw the same tokens as unprepared ones in fp32 (only the decoded pixels move, by float rounding);
in bf16 the logits are rounded, so a token whose two best candidates are within bf16 precision may differ; int8
changes the logits themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from nextscale.errors import UsageError
from nextscale.model.raster import RasterTransformer
from nextscale.quantization import QUANTIZATIONS, quantize_linears
from nextscale.tokenizer.tokenizer import Tokenizer

INFERENCE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def prepare_for_inference(
    tokenizer: Tokenizer,
    model: nn.Module,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
    compile: bool = False,
    quantize: str | None = None,
) -> tuple[Tokenizer, nn.Module]:
    """Prepare both models in place (and return them) for fast sampling; see the module docstring."""
    check_quantize(quantize, dtype)
    check_compile(compile, quantize)
    tokenizer.eval().requires_grad_(False)
    convs = [tokenizer.encoder, tokenizer.quant_conv, tokenizer.post_quant_conv, tokenizer.decoder]
    if dtype is not None:
        for module in convs:
            module.to(dtype)
    if channels_last:
        for module in convs:
            module.to(memory_format=torch.channels_last)
    return tokenizer, prepare_transformer(model, dtype=dtype, compile=compile, quantize=quantize)


def prepare_transformer(
    model: nn.Module, *, dtype: torch.dtype | None = None, compile: bool = False, quantize: str | None = None
) -> nn.Module:
    """The transformer's part of `prepare_for_inference`, in place: cast, quantise, compile (for a refiner too)."""
    check_quantize(quantize, dtype)
    check_compile(compile, quantize)
    model.eval().requires_grad_(False)
    if dtype is not None:
        model.to(dtype)
    if quantize == "int8":
        quantize_linears(model)
    if compile:
        for name in compiled_steps(model):
            if name not in vars(model):  # not compiled yet (an instance attribute once it is)
                setattr(model, name, torch.compile(getattr(model, name)))
    return model


def compiled_steps(model: nn.Module) -> tuple[str, ...]:
    """What `compile` compiles: the methods a sampler calls once per step, each with all the blocks inside."""
    return ("step",) if isinstance(model, RasterTransformer) else ("step_hidden", "logits")


def check_quantize(quantize: str | None, dtype: torch.dtype | None) -> None:
    """A known quantisation, with fp32 weights; and a known dtype."""
    if dtype is not None and dtype not in INFERENCE_DTYPES:
        raise UsageError(f"dtype must be one of {INFERENCE_DTYPES}, got {dtype}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UsageError(f"quantize must be one of {', '.join(QUANTIZATIONS)} (or None), got {quantize!r}")
    if quantize is not None and dtype not in (None, torch.float32):
        raise UsageError(f"{quantize} quantisation keeps fp32 activations; it does not combine with {dtype}")


def check_compile(compile: bool, quantize: str | None) -> None:
    if compile and quantize is not None:
        raise UsageError(
            f"compile does not combine with {quantize} quantisation: dynamo cannot trace the quantised linears (a "
            "graph break at each, slower than the quantised model uncompiled)"
        )
