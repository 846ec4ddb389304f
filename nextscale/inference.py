"""Fast inference: one switch that prepares a tokenizer and a transformer for sampling, behind which every speed-up
of this library sits. The default (unprepared) models compute exactly what the official code computes.

    tokenizer, model = prepare_for_inference(tokenizer, model, dtype=torch.bfloat16)

What it does:
- `dtype` (bf16/fp16): casts the transformer's weights and the tokenizer's convolutions once, instead of autocast
  re-casting every weight on every call (the official sampler runs under autocast). The quantizer (codebook, φ) stays
  fp32, so f̂ is accumulated in fp32 as before; logits are returned in fp32. Worth it only where the hardware
  multiplies in that precision (GPUs, CPUs with AVX-512 BF16 or AMX); on other CPUs bf16 is far slower than fp32.
- `channels_last`: the tokenizer's convolutions in NHWC layout, which oneDNN (CPU) and cuDNN run faster.
- `compile`: `torch.compile` of each transformer block (one graph per scale shape, compiled on first use).
Prepared models draw the same tokens as unprepared ones in fp32 (only the decoded pixels move, by float rounding);
in bf16 the logits are rounded, so a token whose two best candidates are within bf16 precision may differ.
"""

from __future__ import annotations

import torch
from torch import nn

from nextscale.errors import UsageError
from nextscale.tokenizer.tokenizer import Tokenizer

INFERENCE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def prepare_for_inference(
    tokenizer: Tokenizer,
    model: nn.Module,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
    compile: bool = False,
) -> tuple[Tokenizer, nn.Module]:
    """Prepare both models in place (and return them) for fast sampling; see the module docstring."""
    if dtype is not None and dtype not in INFERENCE_DTYPES:
        raise UsageError(f"dtype must be one of {INFERENCE_DTYPES}, got {dtype}")
    tokenizer.eval().requires_grad_(False)
    model.eval().requires_grad_(False)
    convs = [tokenizer.encoder, tokenizer.quant_conv, tokenizer.post_quant_conv, tokenizer.decoder]
    if dtype is not None:
        model.to(dtype)
        for module in convs:
            module.to(dtype)
    if channels_last:
        for module in convs:
            module.to(memory_format=torch.channels_last)
    if compile:
        for block in model.blocks:
            block.forward = torch.compile(block.forward, dynamic=False)
    return tokenizer, model
