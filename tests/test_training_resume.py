"""Exact resume: a run killed with SIGKILL part-way and started again with the same command ends with bitwise the same
weights, optimizer state and RNG state as a run that was never interrupted (CPU, fp32, same seed).

Every run is a real subprocess executing this file (`main` at the bottom calls `nextscale.train.loop.run`). The run to
be killed is made to wait inside step `PAUSE_STEP`, after its backward pass and before its optimizer update, so that
the kill always lands at the same point: the latest checkpoint is step `SAVE_EVERY`, and the steps done after it are
lost and must be redone identically. The test then kills it with SIGKILL, as an out-of-memory killer or a pre-empted
node would, and reruns the same command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import write_debug_tokenizer
from safetensors.torch import load_file

from nextscale.train.checkpoint import CheckpointManager

STEPS = 12
SAVE_EVERY = 4
PAUSE_STEP = 6  # 0-based: steps 4 and 5 and the first half of step 6 are lost at the kill
DROP_PATH_PRESET = "debug-drop-path"  # the debug transformer with stochastic depth, registered by `main`
REPOSITORY = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 120.0  # seconds for one subprocess; a hang fails the test instead of stalling the suite


def loop_settings(output_dir: Path) -> dict[str, Any]:
    return dict(
        output_dir=str(output_dir),
        steps=STEPS,
        batch_size=8,
        base_lr=0.05,
        precision="fp32",
        seed=3,
        save_every=SAVE_EVERY,
        eval_every=SAVE_EVERY,
        eval_batches=1,
        log_every=1,
        progress=False,
    )


# 40 images in batches of 8: 5 steps per epoch, so the kill also falls in the middle of an epoch.
DATA = dict(name="procedural", image_size=8, num_samples=40)


# ---------------------------------------------------------------------------------------------- the subprocesses


def launch(spec: dict[str, Any], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    with open(log, "w") as log_file:
        return subprocess.Popen(
            [sys.executable, __file__, json.dumps(spec)], stdout=log_file, stderr=subprocess.STDOUT, env=env
        )


def finish(process: subprocess.Popen, log: Path) -> None:
    try:
        code = process.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"training run did not finish within {RUN_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}")
    assert code == 0, f"training run failed with exit status {code}:\n{log.read_text()[-3000:]}"


def wait_for(marker: Path, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the run exited ({process.returncode}) before pausing:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the run did not reach step {PAUSE_STEP} within {RUN_TIMEOUT:.0f} s")
        time.sleep(0.05)


def kill_rerun_and_compare(tmp_path: Path, spec: dict[str, Any]) -> tuple[Path, Path]:
    """Run `spec` uninterrupted and, side by side, killed at PAUSE_STEP then rerun; return both output dirs after
    checking that they end in bitwise the same state."""
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    marker = tmp_path / "paused"
    logs = {name: tmp_path / f"{name}.log" for name in ("uninterrupted", "killed", "rerun")}
    processes = [launch({**spec, "loop": loop_settings(uninterrupted)}, logs["uninterrupted"])]
    try:
        victim = launch(
            {**spec, "loop": loop_settings(interrupted), "pause_at_step": PAUSE_STEP, "marker": str(marker)},
            logs["killed"],
        )
        processes.append(victim)
        wait_for(marker, victim, logs["killed"])
        latest = CheckpointManager(interrupted / "checkpoints").latest()
        assert latest is not None and latest.name == f"step_{SAVE_EVERY:08d}"
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        assert not (interrupted / "model").exists()

        processes.append(launch({**spec, "loop": loop_settings(interrupted)}, logs["rerun"]))
        finish(processes[-1], logs["rerun"])
        finish(processes[0], logs["uninterrupted"])
    finally:
        for process in processes:  # after a failure, none is left running
            if process.poll() is None:
                process.kill()
                process.wait()
    resumed = f"resumed from {interrupted / 'checkpoints' / latest.name} (step {SAVE_EVERY})"
    assert resumed in logs["rerun"].read_text()

    for part in ("tokenizer", "transformer"):
        if (uninterrupted / "model" / part).is_dir():
            assert_identical(
                load_file(interrupted / "model" / part / "model.safetensors"),
                load_file(uninterrupted / "model" / part / "model.safetensors"),
                f"exported {part}",
            )
    final = [CheckpointManager(directory / "checkpoints").load() for directory in (interrupted, uninterrupted)]
    assert final[0].step == final[1].step == STEPS
    assert_identical(final[0].tensors, final[1].tensors, "checkpoint tensors")
    assert_identical(final[0].optimizer, final[1].optimizer, "optimizer state")
    assert_identical(final[0].rng, final[1].rng, "RNG state")
    assert final[0].state == final[1].state  # step and sampler position
    return uninterrupted, interrupted


def assert_identical(left: Any, right: Any, where: str) -> None:
    """Bitwise equality of nested dicts / lists of tensors and plain values."""
    if isinstance(left, torch.Tensor):
        assert isinstance(right, torch.Tensor) and left.dtype == right.dtype, where
        same = torch.equal(left, right)
        assert same, f"{where} differs (max |diff| {(left - right).abs().max().item():.3g})"
    elif isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys(), where
        for key in left:
            assert_identical(left[key], right[key], f"{where}[{key!r}]")
    elif isinstance(left, list | tuple):
        assert isinstance(right, list | tuple) and len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right)):
            assert_identical(a, b, f"{where}[{index}]")
    else:
        assert left == right, f"{where}: {left!r} != {right!r}"


def metric_steps(output_dir: Path, name: str) -> list[int]:
    """Logged steps (1-based) at which `train/<name>` was positive."""
    records = map(json.loads, (output_dir / "metrics.jsonl").read_text().splitlines())
    return [record["step"] for record in records if record.get(f"train/{name}", 0) > 0]


def assert_logged_once(output_dir: Path) -> None:
    """metrics.jsonl holds every step's train line and every evaluation once, in order, as an uninterrupted run's."""
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    train = [record["step"] for record in records if "train/loss" in record]
    evaluations = [record["step"] for record in records if any(key.startswith("eval/") for key in record)]
    assert train == list(range(1, STEPS + 1)), train
    assert evaluations == list(range(SAVE_EVERY, STEPS + 1, SAVE_EVERY)), evaluations


# ------------------------------------------------------------------------------------------------------ the tests


def test_var_run_killed_part_way_resumes_bitwise(tmp_path: Path):
    tokenizer_dir = write_debug_tokenizer(tmp_path / "tokenizer")
    spec = {
        "task": "var",
        # label dropout, stochastic depth and an EMA: every source of randomness and state the VAR step has
        "config": {"tokenizer": str(tokenizer_dir), "preset": DROP_PATH_PRESET, "model": {"label_dropout": 0.25}},
        "loop_extra": {"ema_decay": 0.9},
        "data": DATA,
    }
    uninterrupted, interrupted = kill_rerun_and_compare(tmp_path, spec)
    exported = json.loads((uninterrupted / "model" / "transformer" / "config.json").read_text())["config"]
    assert exported["drop_path_rate"] > 0 and exported["label_dropout"] == 0.25
    assert len(list((interrupted / "token_cache").glob("tokens-*.pt"))) == 1  # the rerun reused the cache
    assert_logged_once(interrupted)  # the steps the killed run logged after its checkpoint are not repeated


def test_tokenizer_run_killed_part_way_resumes_bitwise(tmp_path: Path):
    spec = {
        "task": "tokenizer",
        # restarts every 2 steps, with a threshold that finds dead codes each time; an EMA of the weights
        "config": {"preset": "debug", "dead_code_every": 2, "dead_code_threshold": 0.995, "dead_code_grace_steps": 2},
        "loop_extra": {"ema_decay": 0.9},
        "data": DATA,
    }
    uninterrupted, interrupted = kill_rerun_and_compare(tmp_path, spec)
    restarts = metric_steps(interrupted, "codes_restarted")
    assert any(step <= SAVE_EVERY for step in restarts), restarts  # before the kill, kept in the checkpoint
    assert any(step > PAUSE_STEP + 1 for step in restarts), restarts  # after it, in the rerun
    assert_logged_once(interrupted)
    final = CheckpointManager(interrupted / "checkpoints").load()
    assert "ema" in final.tensors and "hit_counts_KV" in final.tensors["usage"]  # compared bitwise above


# ------------------------------------------------------------------------------------------- the subprocess side


def pause_inside_step(task, pause_step: int, marker: Path) -> None:
    """Make the run wait inside step `pause_step`, between its backward pass and its update, until it is killed."""
    from nextscale.train.loop import StepContext

    current = {"step": -1}
    train_step, clip_and_step = task.train_step, StepContext.clip_and_step

    def tracking_train_step(step, keys):
        current["step"] = step
        return train_step(step, keys)

    def pausing_clip_and_step(self, optimizer, parameters):
        if current["step"] == pause_step:
            marker.write_text(str(pause_step))
            time.sleep(3600)
        return clip_and_step(self, optimizer, parameters)

    task.train_step = tracking_train_step
    StepContext.clip_and_step = pausing_clip_and_step


def main(spec_json: str) -> None:
    from nextscale.data.build import DataConfig
    from nextscale.model.config import VAR_PRESETS
    from nextscale.train.loop import LoopConfig, run
    from nextscale.train.tokenizer_task import TokenizerTask, TokenizerTrainConfig
    from nextscale.train.var_task import VARTask, VARTrainConfig

    VAR_PRESETS[DROP_PATH_PRESET] = {**VAR_PRESETS["debug"], "drop_path_rate": 0.25}
    spec = json.loads(spec_json)
    data = DataConfig(**spec["data"])
    if spec["task"] == "var":
        task = VARTask(VARTrainConfig(**spec["config"], data=data))
    else:
        task = TokenizerTask(TokenizerTrainConfig(**spec["config"], data=data))
    if spec.get("pause_at_step") is not None:
        pause_inside_step(task, spec["pause_at_step"], Path(spec["marker"]))
    run(task, LoopConfig(**spec["loop"], **spec.get("loop_extra", {})))


if __name__ == "__main__":
    main(sys.argv[1])
