"""What the training loop does when things go wrong: a loss that diverges, a damaged newest checkpoint, Ctrl-C, and a
resumed run's metrics log.

Most runs here train `NoisyQuadratic`, a real one-parameter problem plugged into the real loop, because it diverges
on demand: SGD on 0.5·(w - y)² is stable while the lr is below 2 and, above it, multiplies w's error by |1 - lr| at
every step. A warmup to a peak lr of 3 therefore gives what a real blow-up looks like: a calm start, then a loss that
grows by orders of magnitude over dozens of steps until it overflows. The Ctrl-C test sends a real SIGINT to a
subprocess training the debug tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nextscale.train.checkpoint import CheckpointManager
from nextscale.train.divergence import EXPLOSION_FACTOR
from nextscale.train.loop import LoopConfig, NonFiniteLossError, StepContext, Task, TrainingInterrupted, run
from nextscale.weights import CheckpointError

REPOSITORY = Path(__file__).resolve().parents[1]


class Targets:
    """64 fixed targets y ~ N(0, 1), indexed by the sampler's keys."""

    def __init__(self, size: int = 64):
        self.values = torch.randn(size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, key) -> torch.Tensor:
        return self.values[getattr(key, "index", key)]


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))


class NoisyQuadratic(Task):
    """Fit one number to noisy targets with plain SGD at lr = base_lr (times the schedule)."""

    name = "quadratic"

    def __init__(self, interrupt_at_step: int | None = None):
        self.interrupt_at_step = interrupt_at_step  # 1-based step at which a Ctrl-C lands (inside the step)

    def setup(self, ctx: StepContext) -> None:
        self.ctx, self.dataset, self.model = ctx, Targets(), Scalar()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=ctx.loop.base_lr)

    def optimizers(self):
        return {"model": self.optimizer}

    def trained_modules(self):
        return {"model": self.model}

    def state_tensors(self):
        return {"model": self.model.state_dict()}

    def load_state_tensors(self, tensors):
        self.model.load_state_dict(tensors["model"])

    def train_step(self, step: int, keys: list) -> dict[str, float]:
        y = torch.stack([self.dataset[key] for key in keys])
        loss = 0.5 * (self.model.w - y).square().mean()
        self.ctx.backward(loss)
        loss = loss.detach()
        if self.interrupt_at_step == step + 1:
            raise KeyboardInterrupt  # what Python raises when SIGINT arrives in the middle of a step
        grad_norm = self.ctx.clip_and_step(self.optimizer, self.model.parameters())
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def export(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.model.state_dict(), str(directory / "model.safetensors"))


def quadratic_loop(output_dir: Path, **overrides) -> LoopConfig:
    settings = dict(
        output_dir=str(output_dir), steps=12, batch_size=8, base_lr=0.5, precision="fp32", grad_clip=0.0,
        warmup_steps=0, final_lr_ratio=1.0, save_every=3, keep_last=3, log_every=1, eval_every=0, progress=False,
    )  # fmt: skip
    return LoopConfig(**{**settings, **overrides})


def records(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def train_losses(output_dir: Path) -> dict[int, float]:
    return {record["step"]: record["train/loss"] for record in records(output_dir) if "train/loss" in record}


# ------------------------------------------------------------------------------------------------------ divergence


def test_a_diverged_run_keeps_the_last_good_checkpoint_and_resumes_from_it(tmp_path: Path):
    # warmup to lr 3 over 60 steps: calm while lr < 2 (about 40 steps), then the loss grows to overflow
    diverging = quadratic_loop(tmp_path, steps=400, base_lr=3.0, warmup_steps=60, save_every=5, keep_last=2)
    with pytest.raises(NonFiniteLossError) as caught:
        run(NoisyQuadratic(), diverging)
    error = caught.value
    message = str(error)
    assert "\n" not in message
    assert "lower --base-lr (now 3)" in message and "enable --grad-clip" in message

    checkpoints = CheckpointManager(tmp_path / "checkpoints")
    good = error.good_checkpoint
    assert good is not None and good.name in message
    assert checkpoints.checkpoints() == [good] or checkpoints.checkpoints()[-1] == good
    assert checkpoints.latest() == good  # so that a rerun resumes there
    good_step = int(good.name.split("_")[1])
    diverged = sorted(path.name for path in checkpoints.directory.glob("diverged-step_*"))
    assert diverged and all(int(name.split("_")[1]) > good_step for name in diverged)  # renamed, not deleted
    assert len(diverged) == 2  # the newest keep_last = 2 were kept, and beside them the good one,
    assert error.step - good_step > 3 * 5  # though more than keep_last saves (every 5 steps) came after it

    # what made it good: every loss up to the one computed with its weights (step good + 1) was healthy,
    losses = train_losses(tmp_path)
    window = [losses[step] for step in range(max(1, good_step - 49), good_step + 1)]
    median = sorted(window)[len(window) // 2]
    assert all(math.isfinite(loss) for loss in window)
    assert losses[good_step + 1] < (1 + EXPLOSION_FACTOR) * median
    # while the run went on through losses of another order before the non-finite one
    assert max(loss for step, loss in losses.items() if step < error.step) > 1e6 * median
    assert not math.isfinite(losses.get(error.step, math.inf))
    state = json.loads((good / "state.json").read_text())
    assert state["good"] is True and len(state["losses"]["recent"]) > 10

    # rerun with the advised change: it resumes from the good checkpoint, not from the diverged ones, and finishes
    calm = quadratic_loop(tmp_path, steps=good_step + 20, base_lr=1.0, warmup_steps=60, save_every=5, keep_last=2)
    run(NoisyQuadratic(), calm)
    assert f"resumed from {good} (step {good_step})" in (tmp_path / "train.log").read_text()
    steps = [record["step"] for record in records(tmp_path) if "train/loss" in record]
    assert steps == list(range(1, good_step + 21))  # the diverged steps' lines are gone, none repeated
    assert all(math.isfinite(loss) for loss in train_losses(tmp_path).values())


def test_a_rerun_with_a_lower_base_lr_uses_it(tmp_path: Path):
    run(NoisyQuadratic(), quadratic_loop(tmp_path, steps=6, base_lr=0.5))
    run(NoisyQuadratic(), quadratic_loop(tmp_path, steps=9, base_lr=0.1))
    lrs = {record["step"]: record["train/lr"] for record in records(tmp_path) if "train/lr" in record}
    assert lrs[6] == 0.5 and lrs[7] == pytest.approx(0.1)  # not the peak lr stored in the optimizer state


# ----------------------------------------------------------------------------------------- damaged checkpoints


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated optimizer": lambda checkpoint: truncate(checkpoint / "optimizer.pt"),
    "truncated weights": lambda checkpoint: truncate(checkpoint / "model.safetensors"),
    "truncated rng": lambda checkpoint: truncate(checkpoint / "rng.pt"),
    "empty state": lambda checkpoint: (checkpoint / "state.json").write_text(""),
    "invalid state": lambda checkpoint: (checkpoint / "state.json").write_text('{"step": 12, "sampl'),
    "state without step": lambda checkpoint: (checkpoint / "state.json").write_text('{"task": "quadratic"}'),
    "state not an object": lambda checkpoint: (checkpoint / "state.json").write_text("[12]"),
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 12-step run with checkpoints at steps 6, 9 and 12."""
    directory = tmp_path_factory.mktemp("finished")
    run(NoisyQuadratic(), quadratic_loop(directory))
    return directory


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_newest_intact_one_used(
    tmp_path: Path, finished_run: Path, damage: str
):
    directory = tmp_path / "run"
    shutil.copytree(finished_run, directory)
    newest = directory / "checkpoints" / "step_00000012"
    intact_w = load_file(newest / "model.safetensors")["w"].clone()  # a copy: load_file maps the file
    DAMAGE[damage](newest)
    damaged_files = {file.name: file.read_bytes() for file in newest.iterdir()}

    run(NoisyQuadratic(), quadratic_loop(directory))  # the same command again

    log = (directory / "train.log").read_text()
    assert "checkpoint step_00000012 is damaged" in log and "kept as damaged-step_00000012" in log
    assert f"resumed from {directory / 'checkpoints' / 'step_00000009'} (step 9)" in log
    kept = directory / "checkpoints" / "damaged-step_00000012"
    assert {file.name: file.read_bytes() for file in kept.iterdir()} == damaged_files  # never deleted or changed
    redone = CheckpointManager(directory / "checkpoints").load()
    assert redone.step == 12 and torch.equal(redone.tensors["model"]["w"], intact_w)  # same result


def test_no_intact_checkpoint_is_a_one_line_error_and_renames_nothing(tmp_path: Path, finished_run: Path):
    directory = tmp_path / "run"
    shutil.copytree(finished_run, directory)
    checkpoints = directory / "checkpoints"
    for name in ("step_00000006", "step_00000009", "step_00000012"):
        truncate(checkpoints / name / "optimizer.pt")
    with pytest.raises(CheckpointError, match="no intact checkpoint under") as caught:
        run(NoisyQuadratic(), quadratic_loop(directory))
    assert "\n" not in str(caught.value) and "optimizer.pt is damaged" in str(caught.value)
    assert sorted(path.name for path in checkpoints.glob("*step_*")) == [
        "step_00000006",
        "step_00000009",
        "step_00000012",
    ]


# --------------------------------------------------------------------------------- Ctrl-C and the metrics log


def test_an_interrupted_run_resumes_without_repeating_its_log(tmp_path: Path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    run(NoisyQuadratic(), quadratic_loop(uninterrupted))
    with pytest.raises(TrainingInterrupted) as caught:
        run(NoisyQuadratic(interrupt_at_step=8), quadratic_loop(interrupted))
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.step == 8
    assert str(caught.value) == "interrupted at step 8; rerun the same command to resume (from step_00000006)"
    with open(interrupted / "metrics.jsonl", "a") as log:  # and a line cut short, as a kill mid-write leaves
        log.write('{"step": 8, "time": 17')

    run(NoisyQuadratic(), quadratic_loop(interrupted))
    clock = ("time", "train/images_per_second")
    resumed, reference = (
        [{k: v for k, v in r.items() if k not in clock} for r in records(d)] for d in (interrupted, uninterrupted)
    )
    assert resumed == reference  # the same lines as an uninterrupted run's, once each
    assert [record["step"] for record in resumed if "train/loss" in record] == list(range(1, 13))


def tiny_training_command(out: Path) -> list[str]:
    """`nextscale train-tokenizer` on tiny data that runs until it is stopped."""
    return [sys.executable, "-m", "nextscale.cli", "train-tokenizer", "--preset", "debug", "--data", "procedural",
            "--image-size", "8", "--num-samples", "32", "--steps", "100000", "--batch-size", "8", "--precision",
            "fp32", "--save-every", "5", "--log-every", "1", "--eval-every", "0", "--no-progress", "--out",
            str(out)]  # fmt: skip


def test_ctrl_c_stops_with_one_line_and_exit_status_130(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    process = subprocess.Popen(
        tiny_training_command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "checkpoints" / "latest").exists():  # at least one checkpoint, then Ctrl-C
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    latest = CheckpointManager(tmp_path / "checkpoints").latest()
    step = int(last_line.split()[5].rstrip(";"))
    assert last_line == (
        f"nextscale train-tokenizer: interrupted at step {step}; rerun the same command to resume (from {latest.name})"
    )
    logged = [record["step"] for record in records(tmp_path)]
    assert logged[-1] in (step - 1, step)  # the step in progress, just after the last one logged
    assert CheckpointManager(tmp_path / "checkpoints").load().step == int(latest.name.split("_")[1])  # intact
