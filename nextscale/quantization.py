"""int8 dynamic quantisation of a transformer's block linears, for CPU inference, with PyTorch's own kernels.

    quantized = quantize_linears(model)   # in place; returns the names of the linears it replaced

Every attention's qkv and output projection and every MLP's two linears (about 97% of the weights and of the
multiply-adds of a VAR transformer) become `torch.ao.nn.quantized.dynamic.Linear`: int8 weights quantised once, per
output channel, and activations quantised per call from their observed range, the product accumulated in int32
(fbgemm / oneDNN on x86, QNNPACK on ARM). The qkv projection is called as `F.linear` with the q and v biases
concatenated, so it is first replaced by one Linear with those biases folded in (`SelfAttention.fused_qkv`).
What stays fp32: the embeddings, the AdaLN linears (computed once per image), the head and its AdaLN (the logits the
tokens are drawn from), the norms and the attention itself; logits are still returned in fp32.

It runs on the CPU only and with fp32 weights (the quantised linears take fp32 activations). `torch.ao.quantization`
announces its deprecation in favour of torchao; it still works in the torch this library is tested with (2.14), and
it is the path that is faster: torchao 0.18's `Int8DynamicActivationInt8WeightConfig` was slower than fp32 on the
same CPU. Its deprecation warnings are silenced around the one call that raises them.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from nextscale.errors import UsageError
from nextscale.model.blocks import MLP, SelfAttention

QUANTIZATIONS = ("int8",)  # the values of `quantize=` (prepare_for_inference, Pipeline, --quantize)


def quantize_linears(model: nn.Module) -> list[str]:
    """Replace, in place, every SelfAttention's qkv (biases folded in, as `fused_qkv`) and proj and every MLP's fc1
    and fc2 by dynamically quantised int8 Linears. Returns the qualified names of the modules now quantised."""
    parameter = next(model.parameters())
    if parameter.device.type != "cpu":
        raise UsageError(f"int8 quantisation runs on the CPU only; the model is on {parameter.device}")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise UsageError("int8 quantisation needs fp32 weights (it does not combine with bf16 or fp16)")
    model.eval().requires_grad_(False)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, SelfAttention) and module.fused_qkv is None:
            module.fused_qkv = _folded_qkv(module)
            del module.qkv
            names += [f"{name}.fused_qkv", f"{name}.proj"]
        elif isinstance(module, MLP):
            names += [f"{name}.fc1", f"{name}.fc2"]
    names = [name for name in names if isinstance(model.get_submodule(name), nn.Linear)]  # not yet quantised
    if names:
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
            torch.ao.quantization.quantize_dynamic(
                model, qconfig_spec=dict.fromkeys(names, qconfig), dtype=torch.qint8, inplace=True
            )
    return names


def is_quantized(module: nn.Module) -> bool:
    """Whether `module` is one of the dynamically quantised Linears this module puts in."""
    return isinstance(module, torch.ao.nn.quantized.dynamic.Linear)


@torch.no_grad()
def _folded_qkv(attention: SelfAttention) -> nn.Linear:
    """The attention's qkv projection as one fp32 Linear with its biases (q_bias, none for k, v_bias) folded in."""
    width = attention.qkv.in_features
    folded = nn.Linear(width, 3 * width, device=attention.qkv.weight.device)
    folded.weight.copy_(attention.qkv.weight)
    folded.bias.copy_(torch.cat((attention.q_bias, torch.zeros_like(attention.q_bias), attention.v_bias)))
    return folded.eval().requires_grad_(False)
