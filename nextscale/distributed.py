"""Processes working together, for every layer that needs it (training, evaluation, sample sets): process-group
setup from torchrun's environment, barriers and reductions. Data-parallel wrapping is training's
(`nextscale.train.distributed`).

Launch with `torchrun --nproc_per_node=N ...`: `setup_distributed()` reads RANK / WORLD_SIZE / LOCAL_RANK, picks
`nccl` and `cuda:<local_rank>` on GPUs or `gloo` and the CPU otherwise. Without those variables it is a single
process on `cuda:0` or the CPU and no process group is created; every helper here then does the trivial thing.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


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


def sum_over_processes(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum each tensor over processes in place (identity without a process group)."""
    if is_initialized() and dist.get_world_size() > 1:
        for value in values.values():
            dist.all_reduce(value)
    return values
