"""AdamW with the VAR recipe: two parameter groups (decay / no decay) and the lr scaled by the batch size.

The rule follows the official `filter_params`: a parameter gets no weight decay when it is a vector or scalar
(norm gains and biases), a bias, or one of the learned position / level / modulation tensors listed in
`NO_WEIGHT_DECAY_SUFFIXES`. Everything else decays: Linear and conv weights, the token and class embeddings,
the head, the AdaLN linear weights.

Only trainable parameters go into the optimizer. The official code asserts that every parameter requires grad;
here frozen parameters (for example a tokenizer that sits inside the same module) are left out and counted in a
log line, so a frozen part never receives updates or weight decay by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from nextscale.errors import UsageError

logger = logging.getLogger(__name__)

# The lr in the recipe is given per this many images (official `tblr`, "base lr per 256 images").
REFERENCE_BATCH_SIZE = 256

# Parameters exempt from weight decay by name: this project's name (the last dotted components of the
# parameter name) -> the official VAR name it replaces. Vectors and biases are exempt by the ndim / "bias" rule,
# so only the tensors of two or more dimensions need to be listed here.
NO_WEIGHT_DECAY_SUFFIXES: Mapping[str, str] = MappingProxyType(
    {
        "start_pos": "pos_start",  # (1, first_l, C) learned start-of-sequence positions
        "pos_embed": "pos_1LC",  # (1, L, C) learned absolute positions over all scales
        "level_embed.weight": "lvl_embed.weight",  # (K, C) scale (level) embedding table
        "adaln_bias": "ada_gss",  # (1, 1, 6, C) learned AdaLN offsets of the shared-AdaLN blocks
        "logit_scale": "scale_mul_1H11",  # (1, H, 1, 1) learned log attention temperature
    }
)


def is_no_weight_decay(name: str, parameter: torch.Tensor) -> bool:
    """Whether the parameter `name` is exempt from weight decay under the VAR rule."""
    if parameter.ndim <= 1 or name.endswith("bias"):
        return True
    return any(name == suffix or name.endswith("." + suffix) for suffix in NO_WEIGHT_DECAY_SUFFIXES)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split the trainable parameters of `model` into a decay group and a no-decay group for AdamW.

    Each group carries `params`, `param_names` (kept in the optimizer state dict), `weight_decay`, and
    `weight_decay_scale` (1.0 or 0.0), which `nextscale.train.schedule.apply_schedule` uses to keep the no-decay
    group at zero when the weight decay is annealed. Parameters with `requires_grad=False` are left out.
    Empty groups are dropped.
    """
    decay_names: list[str] = []
    decay_params: list[nn.Parameter] = []
    no_decay_names: list[str] = []
    no_decay_params: list[nn.Parameter] = []
    frozen_names: list[str] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            frozen_names.append(name)
        elif is_no_weight_decay(name, parameter):
            no_decay_names.append(name)
            no_decay_params.append(parameter)
        else:
            decay_names.append(name)
            decay_params.append(parameter)
    if not decay_params and not no_decay_params:
        raise UsageError(
            f"{type(model).__name__} has no trainable parameters ({len(frozen_names)} frozen): nothing to optimize"
        )
    if frozen_names:
        logger.info(
            "optimizer: leaving out %d frozen parameters (requires_grad=False), e.g. %s",
            len(frozen_names),
            ", ".join(frozen_names[:3]),
        )
    groups = [
        {
            "params": decay_params,
            "param_names": decay_names,
            "weight_decay": weight_decay,
            "weight_decay_scale": 1.0,
        },
        {
            "params": no_decay_params,
            "param_names": no_decay_names,
            "weight_decay": 0.0,
            "weight_decay_scale": 0.0,
        },
    ]
    return [group for group in groups if group["params"]]


def scaled_lr(base_lr: float, global_batch_size: int) -> float:
    """The peak lr: `base_lr` is per 256 images, `global_batch_size` the images per optimizer step.

    Images per optimizer step include gradient accumulation: the official `ac * tblr * glb_bs / 256`, where its
    `glb_bs` counts one micro-batch per rank, equals `tblr * (images per step) / 256`.
    """
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
    return base_lr * global_batch_size / REFERENCE_BATCH_SIZE


def build_optimizer(
    model: nn.Module,
    base_lr: float,
    global_batch_size: int,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `model` with lr = base_lr * global_batch_size / 256.

    The fused CUDA kernel is used when every trainable parameter is on a CUDA device. Each group also records
    its `peak_lr`, the value the lr schedule multiplies.
    """
    groups = param_groups(model, weight_decay)
    lr = scaled_lr(base_lr, global_batch_size)
    for group in groups:
        group["peak_lr"] = lr
    on_cuda = all(parameter.is_cuda for group in groups for parameter in group["params"])
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True if on_cuda else None)
    logger.info(
        "optimizer: AdamW lr %.3g (base %.3g x %d / %d), weight decay %.3g, %s",
        lr,
        base_lr,
        global_batch_size,
        REFERENCE_BATCH_SIZE,
        weight_decay,
        ", ".join(f"{len(group['params'])} tensors at wd {group['weight_decay']:g}" for group in groups),
    )
    return optimizer
