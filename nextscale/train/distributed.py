"""Data-parallel training, applied from outside the model: DDP / FSDP2 wrapping, full (gathered) state dicts of
weights and optimizer state for checkpoints. Process groups and reductions are `nextscale.distributed`'s."""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Literal

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from nextscale.distributed import DistributedContext, is_initialized

logger = logging.getLogger(__name__)

WrapStrategy = Literal["ddp", "fsdp", "none"]


def wrap_model(model: nn.Module, context: DistributedContext, strategy: WrapStrategy = "ddp") -> nn.Module:
    """Wrap `model` for data-parallel training; the model itself knows nothing about it.

    - `ddp`: DistributedDataParallel(find_unused_parameters=False, broadcast_buffers=False), as in the official
      training; the model is moved to `context.device` first.
    - `fsdp`: FSDP2 `fully_shard` on each transformer block (the model's `blocks`), then on the root; for the
      largest presets. Parameters become sharded DTensors: use `full_state_dict` to save. Precision stays the
      loop's autocast; gradients are reduced in fp32.
    - `none`, or a single process: the model on `context.device`, unwrapped.
    """
    if strategy not in ("ddp", "fsdp", "none"):
        raise ValueError(f"unknown wrap strategy {strategy!r}")
    if strategy == "none" or not (context.is_distributed and is_initialized()):
        if strategy != "none":
            logger.info("wrap_model: single process, %s not applied", strategy)
        return model.to(context.device)
    if strategy == "ddp":
        model = model.to(context.device)
        # No buffer sync in forward (the official broadcast_buffers=False): VAR's buffers are constants. Newer
        # torch spells it forward_sync_buffers=False (and deprecates the old name); it also syncs them once at
        # construction, which changes nothing for constant buffers.
        ddp_parameters = inspect.signature(nn.parallel.DistributedDataParallel).parameters
        buffer_flag = "forward_sync_buffers" if "forward_sync_buffers" in ddp_parameters else "broadcast_buffers"
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[context.device.index] if context.device.type == "cuda" else None,
            find_unused_parameters=False,
            **{buffer_flag: False},
        )

    model = model.to(context.device)
    policy = MixedPrecisionPolicy(reduce_dtype=torch.float32)
    blocks = getattr(model, "blocks", None)
    for block in blocks if isinstance(blocks, nn.ModuleList) else []:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP / FSDP1 / torch.compile wrappers (FSDP2 shards in place: returned as is)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        elif type(model).__name__ == "FullyShardedDataParallel" and isinstance(
            getattr(model, "module", None), nn.Module
        ):
            model = model.module
        else:
            return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A full, unsharded state dict with the plain module's names, for saving.

    Without sharding this is the plain module's state dict on every rank. Under FSDP2 it is a collective (call it
    on every rank): rank 0 receives full CPU tensors, the other ranks an empty dict.
    """
    plain = unwrap_model(model)
    if not is_sharded(plain):
        return plain.state_dict()

    return get_model_state_dict(plain, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def is_sharded(model: nn.Module) -> bool:
    return any(type(parameter).__name__ == "DTensor" for parameter in unwrap_model(model).parameters())


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full (unsharded) state dict, as `full_state_dict` writes it, into a plain or FSDP2-sharded model."""
    plain = unwrap_model(model)
    if not is_sharded(plain):
        plain.load_state_dict(state)
        return

    set_model_state_dict(plain, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state with full tensors (gathered under FSDP2; a collective then, call it on every rank)."""
    if not is_sharded(model):
        return optimizer.state_dict()

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    _reshard(model)
    with _without_param_names(optimizer):
        return get_optimizer_state_dict(unwrap_model(model), optimizer, options=options)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return

    options = StateDictOptions(full_state_dict=True)
    with _without_param_names(optimizer):
        set_optimizer_state_dict(unwrap_model(model), optimizer, optim_state_dict=state, options=options)


def _reshard(model: nn.Module) -> None:
    """FSDP2 keeps the root's parameters unsharded after backward; the optimizer holds the sharded ones."""
    for module in unwrap_model(model).modules():
        if hasattr(module, "reshard") and type(module).__name__.startswith("FSDP"):
            module.reshard()


@contextlib.contextmanager
def _without_param_names(optimizer: torch.optim.Optimizer):
    """torch's distributed optimizer-state helpers expect parameter ids, not the `param_names` our groups carry."""
    saved = [group.pop("param_names", None) for group in optimizer.param_groups]
    try:
        yield
    finally:
        for group, names in zip(optimizer.param_groups, saved):
            if names is not None:
                group["param_names"] = names
