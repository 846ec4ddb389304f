"""Process-group setup, seeding, reductions and data-parallel wrapping, applied from outside the model.

Launch with `torchrun --nproc_per_node=N ...`: `setup_distributed()` reads RANK / WORLD_SIZE / LOCAL_RANK, picks
`nccl` and `cuda:<local_rank>` on GPUs or `gloo` and the CPU otherwise. Without those variables it is a single
process on `cuda:0` or the CPU and no process group is created; every helper here then does the trivial thing.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import logging
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

WrapStrategy = Literal["ddp", "fsdp", "none"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job. `backend` is None for a single process without a process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None and self.world_size > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def setup_distributed(
    backend: str | None = None, init_method: str = "env://", timeout_minutes: float = 30.0
) -> DistributedContext:
    """Initialise the process group from torchrun's environment, or describe a single process without one."""
    use_cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:
        device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        return DistributedContext(device=device)

    rank = int(os.environ["RANK"])
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    default_local_rank = rank % torch.cuda.device_count() if use_cuda else 0
    local_rank = int(os.environ.get("LOCAL_RANK", default_local_rank))
    backend = backend or ("nccl" if use_cuda else "gloo")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=device if backend == "nccl" else None,
        )
    context = DistributedContext(rank, world_size, local_rank, device, backend)
    if context.is_main_process:
        logger.info("distributed: %d processes, backend %s, rank 0 on %s", world_size, backend, device)
    return context


def cleanup(synchronize: bool = True) -> None:
    """Destroy the process group if there is one.

    With `synchronize`, all ranks first meet at a barrier, so no rank tears the group down while another still
    finishes a collective (for example rank 0 gathering a full state dict). Pass False on an error path, where
    the other ranks may never arrive.
    """
    if is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def seed_everything(seed: int, rank: int = 0, world_size: int = 1, deterministic: bool = False) -> int:
    """Seed python, numpy and torch (all devices) with `seed * world_size + rank`, as the official code does.

    Each rank draws differently (its own augmentations, label dropout); the run is reproducible for a given
    world size. `deterministic` also makes cuDNN pick deterministic kernels. Returns the seed used.
    """
    process_seed = seed * world_size + rank
    random.seed(process_seed)
    np.random.seed(process_seed % 2**32)
    torch.manual_seed(process_seed)  # also seeds every CUDA device
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return process_seed


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over all processes, as a new floating-point tensor (a copy when not distributed)."""
    result = tensor.detach().clone()
    if not result.is_floating_point():
        result = result.double()
    if is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
        result /= dist.get_world_size()
    return result


def reduce_metrics(metrics: Mapping[str, float | torch.Tensor], device: torch.device) -> dict[str, float]:
    """Average a dict of scalars over all processes in one collective (same keys on every rank)."""
    names = sorted(metrics)
    values = torch.tensor(
        [
            float(metrics[name].detach().item() if isinstance(metrics[name], torch.Tensor) else metrics[name])
            for name in names
        ],
        dtype=torch.float64 if device.type == "cpu" else torch.float32,
        device=device,
    )
    averaged = all_reduce_mean(values).tolist()
    return dict(zip(names, averaged))


def wrap_model(
    model: nn.Module,
    context: DistributedContext,
    strategy: WrapStrategy = "ddp",
    fsdp_blocks: Iterable[nn.Module] | None = None,
    fsdp_param_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Wrap `model` for data-parallel training; the model itself knows nothing about it.

    - `ddp`: DistributedDataParallel(find_unused_parameters=False, broadcast_buffers=False), as in the official
      training; the model is moved to `context.device` first.
    - `fsdp`: FSDP2 `fully_shard` on each module of `fsdp_blocks` (default: the `blocks` ModuleList of the model,
      the transformer blocks), then on the root; for the largest presets. Parameters become sharded DTensors:
      use `full_state_dict` to save. `fsdp_param_dtype` (e.g. torch.bfloat16) sets the compute dtype.
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
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    model = model.to(context.device)
    policy = MixedPrecisionPolicy(param_dtype=fsdp_param_dtype, reduce_dtype=torch.float32)
    if fsdp_blocks is None:
        blocks = getattr(model, "blocks", None)
        fsdp_blocks = list(blocks) if isinstance(blocks, nn.ModuleList) else []
    for block in fsdp_blocks:
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
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(plain, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def is_sharded(model: nn.Module) -> bool:
    return any(type(parameter).__name__ == "DTensor" for parameter in unwrap_model(model).parameters())


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full (unsharded) state dict, as `full_state_dict` writes it, into a plain or FSDP2-sharded model."""
    plain = unwrap_model(model)
    if not is_sharded(plain):
        plain.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(plain, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state with full tensors (gathered under FSDP2; a collective then, call it on every rank)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    _reshard(model)
    with _without_param_names(optimizer):
        return get_optimizer_state_dict(unwrap_model(model), optimizer, options=options)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

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
