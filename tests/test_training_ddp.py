"""Data parallelism changes nothing but speed: two gloo processes on the CPU reach the weights of one process with the
same global batch (fp32, within 1e-5), with the token cache, checkpoints and export written once, by rank 0.

The sampler follows the recipe: each rank reads a contiguous shard of the epoch's permutation, so two processes put
different images together in a step than one process does, unless an epoch is a single global batch. The dataset
here is exactly one global batch, so every step of every run sees the same images; what the test then pins down is
everything else: gradient averaging, label dropout drawn over the global batch, clipping, cache and checkpoints.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import write_debug_tokenizer
from safetensors.torch import load_file

from nextscale.data.build import DataConfig
from nextscale.distributed import cleanup
from nextscale.train.checkpoint import CheckpointManager
from nextscale.train.loop import LoopConfig, run
from nextscale.train.var_task import VARTask, VARTrainConfig

WORLD_SIZE = 2
BATCH_SIZE = 16  # global: 8 images per process
STEPS = 6
TIMEOUT = 120.0  # seconds; a hung collective fails the test instead of stalling the suite


def task_config(tokenizer_dir: str) -> VARTrainConfig:
    # 2.5 global batches per epoch: the last one padded, and the 6 steps cross two epoch boundaries
    data = DataConfig(name="procedural", image_size=8, num_samples=BATCH_SIZE * 5 // 2)
    return VARTrainConfig(tokenizer=tokenizer_dir, preset="debug", model={"label_dropout": 0.3}, data=data)


def loop_config(output_dir: Path, **overrides) -> LoopConfig:
    settings = dict(
        output_dir=str(output_dir),
        steps=STEPS,
        batch_size=BATCH_SIZE,
        base_lr=0.05,
        precision="fp32",
        seed=1,
        save_every=3,
        eval_every=3,
        eval_batches=1,
        log_every=1,
        progress=False,
    )
    return LoopConfig(**{**settings, **overrides})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RNGRecordingVARTask(VARTask):
    """Saves the global torch generator's state at the first step: the stream drop path would draw from."""

    def __init__(self, tokenizer_dir: str, record: Path):
        super().__init__(task_config(tokenizer_dir))
        self.record = record

    def train_step(self, step, keys):
        if step == 0:
            torch.save(torch.get_rng_state(), self.record)
        return super().train_step(step, keys)


def _worker(rank: int, port: int, tokenizer_dir: str, output_dir: str, wrap: str) -> None:
    """One rank, set up by `setup_distributed` from the environment a launcher such as torchrun provides."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    run(
        RNGRecordingVARTask(tokenizer_dir, Path(output_dir).parent / f"rng_rank{rank}.pt"),
        loop_config(Path(output_dir), wrap=wrap),
    )
    gc.collect()  # the DDP-wrapped model goes before its process group does
    cleanup()
    # About one run in 25, a gloo process aborts in torch's C++ teardown at interpreter exit ("terminate called
    # without an active exception", no Python frame left) after all its work is done; leave without that teardown.
    os._exit(0)


def exported_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "model" / "transformer" / "model.safetensors")


@pytest.mark.parametrize("wrap", ["ddp", "fsdp"])
def test_two_processes_reach_the_weights_of_one(tmp_path: Path, wrap: str):
    tokenizer_dir = write_debug_tokenizer(tmp_path / "tokenizer")
    ddp_dir = tmp_path / "ddp" / "run"
    ddp_dir.parent.mkdir()
    workers = mp.spawn(_worker, args=(free_port(), tokenizer_dir, str(ddp_dir), wrap), nprocs=WORLD_SIZE, join=False)

    try:  # the single-process references train here while the two workers start up
        run(VARTask(task_config(tokenizer_dir)), loop_config(tmp_path / "single"))
        run(VARTask(task_config(tokenizer_dir)), loop_config(tmp_path / "accumulated", grad_accumulation=2))
        deadline = time.monotonic() + TIMEOUT
        while not workers.join(timeout=1.0):  # raises if a worker failed
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD_SIZE} gloo processes did not finish within {TIMEOUT:.0f} s")
    finally:
        for process in workers.processes:  # after a failure, none is left running
            if process.is_alive():
                process.terminate()

    single = exported_weights(tmp_path / "single")
    checkpoints = CheckpointManager(tmp_path / "single" / "checkpoints")
    halfway = checkpoints.load(checkpoints.step_directory(3)).tensors["model"]
    assert max((single[key] - halfway[key]).abs().max().item() for key in single) > 1e-3  # the weights do move
    for name, directory in (("2 processes", ddp_dir), ("2 micro-batches", tmp_path / "accumulated")):
        other = exported_weights(directory)
        assert other.keys() == single.keys()
        for key, tensor in single.items():
            difference = (other[key] - tensor).abs().max().item()
            assert difference <= 1e-5, f"{name}: {key} differs from one process by {difference:.3g}"

    # Rank 0 alone wrote the metrics, the token cache and the checkpoints.
    assert len((ddp_dir / "metrics.jsonl").read_text().splitlines()) == STEPS + 2  # train lines + 2 evaluations
    assert len(list((ddp_dir / "token_cache").glob("tokens-*.pt"))) == 1
    assert sorted(path.name for path in (ddp_dir / "checkpoints").glob("step_*")) == ["step_00000003", "step_00000006"]
    states = [torch.load(tmp_path / "ddp" / f"rng_rank{rank}.pt") for rank in range(WORLD_SIZE)]
    assert not torch.equal(*states), "both ranks draw in-model randomness (drop path) from the same stream"
