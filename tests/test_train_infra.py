"""Training infrastructure: optimizer groups, schedules, checkpoints, metrics, distributed helpers, EMA."""

from __future__ import annotations

import builtins
import copy
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from nextscale.distributed import DistributedContext, all_reduce_mean, cleanup, reduce_metrics, setup_distributed
from nextscale.train import checkpoint as checkpoint_module
from nextscale.train.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from nextscale.train.distributed import full_state_dict, unwrap_model, wrap_model
from nextscale.train.ema import EMA
from nextscale.train.metrics import MetricLogger, ThroughputMeter, configure_logging, format_eta
from nextscale.train.optim import NO_WEIGHT_DECAY_SUFFIXES, build_optimizer, param_groups
from nextscale.train.schedule import ScheduleConfig, apply_schedule, lr_multiplier, weight_decay_at

# ---------------------------------------------------------------- a module named like the project's transformer


class TinyBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.logit_scale = nn.Parameter(torch.full((1, 2, 1, 1), 4.0))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.adaln_bias = nn.Parameter(torch.zeros(1, 1, 6, width))


class TinyTransformer(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 4, num_levels: int = 3, num_tokens: int = 14):
        super().__init__()
        self.class_embed = nn.Embedding(num_classes + 1, width)
        self.token_embed = nn.Linear(5, width)
        self.start_pos = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, width))
        self.level_embed = nn.Embedding(num_levels, width)
        self.blocks = nn.ModuleList([TinyBlock(width)])
        self.conv = nn.Conv2d(width, width, 3)
        self.head = nn.Linear(width, 16)
        self.frozen = nn.Linear(width, width)
        self.frozen.requires_grad_(False)


def test_param_groups_follow_the_reference_rule():
    model = TinyTransformer()
    groups = param_groups(model, weight_decay=0.05)
    decay, no_decay = groups
    assert set(decay["param_names"]) == {
        "class_embed.weight",
        "token_embed.weight",
        "blocks.0.qkv.weight",
        "blocks.0.adaln.1.weight",
        "conv.weight",
        "head.weight",
    }
    assert set(no_decay["param_names"]) == {
        "token_embed.bias",
        "start_pos",
        "pos_embed",
        "level_embed.weight",
        "blocks.0.norm.weight",
        "blocks.0.norm.bias",
        "blocks.0.q_bias",
        "blocks.0.logit_scale",
        "blocks.0.adaln.1.bias",
        "blocks.0.adaln_bias",
        "conv.bias",
        "head.bias",
    }
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    # Frozen parameters are left out; every tensor is in exactly one group, next to its own name.
    assert not any(name.startswith("frozen.") for group in groups for name in group["param_names"])
    named = dict(model.named_parameters())
    for group in groups:
        assert all(named[name] is param for name, param in zip(group["param_names"], group["params"]))
    # The official names behind the exemptions are documented.
    assert NO_WEIGHT_DECAY_SUFFIXES["pos_embed"] == "pos_1LC"


def test_param_groups_see_through_a_wrapper_prefix_and_reject_fully_frozen_models():
    wrapper = nn.Module()
    wrapper.module = TinyTransformer()
    decay, no_decay = param_groups(wrapper, weight_decay=0.1)
    assert "module.pos_embed" in no_decay["param_names"] and "module.head.weight" in decay["param_names"]
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), 0.05)


def test_build_optimizer_scales_lr_by_batch():
    optimizer = build_optimizer(TinyTransformer(), base_lr=1e-4, global_batch_size=768)
    assert isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(3e-4, rel=1e-12)
        assert group["peak_lr"] == pytest.approx(3e-4, rel=1e-12)
        assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8
        assert not group["fused"]  # CPU
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]


# ---------------------------------------------------------------- schedules

# total 1001 steps, warmup 100: post-warmup progress p = (step - 100) / 900.
TOTAL, WARMUP = 1001, 100


def test_lr_multiplier_lin0_matches_hand_computed_values():
    def at(step: int) -> float:
        return lr_multiplier(step, TOTAL, WARMUP, "lin0", warmup_start_ratio=0.005, final_lr_ratio=0.01)

    assert at(0) == pytest.approx(0.005)
    assert at(50) == pytest.approx(0.005 + 0.995 * 50 / 100)  # halfway through warmup: 0.5025
    assert at(100) == pytest.approx(1.0)  # end of warmup
    assert at(144) == pytest.approx(1.0)  # p = 44/900 = 0.0489 < 0.05: flat
    assert at(145) == pytest.approx(0.01 + 0.99 * (1 - 45 / 900) / 0.95)  # p = 0.05: still 1.0, now decaying
    assert at(550) == pytest.approx(0.01 + 0.99 * 0.5 / 0.95)  # midway p = 0.5: 0.5310526...
    assert at(1000) == pytest.approx(0.01)  # last step
    assert at(5000) == pytest.approx(0.01)  # past the end: clamped


@pytest.mark.parametrize(
    ("schedule", "midway", "early"),
    [
        (
            "cos",
            0.01 + 0.99 * (0.5 + 0.5 * math.cos(math.pi * 0.5)),
            0.01 + 0.99 * (0.5 + 0.5 * math.cos(0.1 * math.pi)),
        ),
        ("lin", 0.01 + 0.99 * 0.5 / 0.85, 1.0),  # p = 0.1 < 0.15 flat
        ("lin00", 0.01 + 0.99 * 0.5, 0.01 + 0.99 * 0.9),
        ("exp", math.exp((0.5 - 0.15) / 0.85 * math.log(0.01)), 1.0),
    ],
)
def test_other_schedules(schedule: str, midway: float, early: float):
    assert lr_multiplier(0, TOTAL, WARMUP, schedule) == pytest.approx(0.005)
    assert lr_multiplier(190, TOTAL, WARMUP, schedule) == pytest.approx(early)  # p = 0.1
    assert lr_multiplier(550, TOTAL, WARMUP, schedule) == pytest.approx(midway)
    assert lr_multiplier(1000, TOTAL, WARMUP, schedule) == pytest.approx(0.01)


def test_two_slope_linear_schedule_is_continuous():
    middle = (1 + 0.01 + 0.99 * 0.2) / 2  # halfway between 1 and lin00 at T = 0.8
    assert lr_multiplier(100, TOTAL, WARMUP, "lin0.8") == pytest.approx(1.0)
    assert lr_multiplier(820, TOTAL, WARMUP, "lin0.8") == pytest.approx(middle)  # p = 0.8
    assert lr_multiplier(1000, TOTAL, WARMUP, "lin0.8") == pytest.approx(0.01)
    with pytest.raises(ValueError):
        ScheduleConfig(total_steps=10, schedule="linear")


def test_weight_decay_cosine_and_apply_schedule():
    assert weight_decay_at(0, TOTAL, 0.05, 0.08) == pytest.approx(0.05)
    assert weight_decay_at(500, TOTAL, 0.05, 0.08) == pytest.approx(0.065)
    assert weight_decay_at(1000, TOTAL, 0.05, 0.08) == pytest.approx(0.08)

    config = ScheduleConfig(total_steps=TOTAL, warmup_steps=WARMUP, final_lr_ratio=0.1, final_weight_decay=0.08)
    optimizer = build_optimizer(TinyTransformer(), base_lr=1e-4, global_batch_size=512, weight_decay=0.05)
    lr, weight_decay = apply_schedule(optimizer, 1000, config)
    assert lr == pytest.approx(2e-4 * 0.1) and weight_decay == pytest.approx(0.08)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == pytest.approx(0.08) and no_decay["weight_decay"] == 0.0
    assert no_decay["lr"] == pytest.approx(2e-5)
    assert ScheduleConfig(total_steps=5000).resolved_warmup_steps == 100  # 2% (official: epochs / 50)
    assert ScheduleConfig(total_steps=10).resolved_final_weight_decay == 0.05


# ---------------------------------------------------------------- checkpoints


def _trained_model_and_optimizer() -> tuple[TinyTransformer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = TinyTransformer()
    optimizer = build_optimizer(model, 1e-3, 256)
    model.head(torch.randn(2, 8)).square().mean().backward()
    optimizer.step()
    return model, optimizer


def _assert_same(left: object, right: object) -> None:
    if isinstance(left, torch.Tensor):
        assert isinstance(right, torch.Tensor) and left.dtype == right.dtype and torch.equal(left, right)
    elif isinstance(left, dict):
        assert left.keys() == right.keys()
        for key in left:
            _assert_same(left[key], right[key])
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right)
        for a, b in zip(left, right):
            _assert_same(a, b)
    else:
        assert left == right


def test_checkpoint_round_trip_is_bitwise(tmp_path: Path):
    model, optimizer = _trained_model_and_optimizer()
    model_state = model.state_dict()
    shared = torch.arange(12.0)
    extra = {
        "tied_a": shared.view(3, 4),  # two names on one storage: safetensors needs them apart
        "tied_b": shared.view(4, 3),
        "slice": shared[2:6],
        "half": torch.randn(3, dtype=torch.bfloat16),
        "index": torch.arange(5),
    }
    state = {"step": 7, "epoch": 1, "sampler": {"epoch": 1, "position": 96}, "metrics": {"loss": 5.25}}
    config = {"model": {"depth": 2}, "base_lr": 1e-4}
    manager = CheckpointManager(tmp_path / "ckpt")
    assert manager.latest() is None and manager.load_latest() is None

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    rng = capture_rng_state()
    expected_draws = (random.random(), np.random.rand(), torch.rand(4))
    path = manager.save(7, {"model": model_state, "extra": extra}, optimizer.state_dict(), state, config, rng)

    assert path.name == "step_00000007" and manager.latest() == path
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "extra.safetensors",
        "model.safetensors",
        "optimizer.pt",
        "rng.pt",
        "state.json",
    ]
    loaded = manager.load()
    assert loaded.step == 7 and loaded.state == state and loaded.config == config
    _assert_same(loaded.tensors["model"], model_state)
    _assert_same(loaded.tensors["extra"], extra)
    _assert_same(loaded.optimizer, optimizer.state_dict())

    # The loaded optimizer state drives a fresh optimizer exactly like the original.
    fresh_model = TinyTransformer()
    fresh_model.load_state_dict(loaded.tensors["model"])
    fresh_optimizer = build_optimizer(fresh_model, 1e-3, 256)
    fresh_optimizer.load_state_dict(loaded.optimizer)
    _assert_same(fresh_optimizer.state_dict(), optimizer.state_dict())

    torch.rand(10), random.random(), np.random.rand()  # move all generators on
    restore_rng_state(loaded.rng)
    assert random.random() == expected_draws[0]
    assert np.random.rand() == expected_draws[1]
    assert torch.equal(torch.rand(4), expected_draws[2])


def test_keep_last_prunes_old_checkpoints(tmp_path: Path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (100, 200, 300, 400, 500):
        manager.save(step, {"model": {"w": torch.full((2,), float(step))}}, state={"step": step})
    assert [p.name for p in manager.checkpoints()] == ["step_00000400", "step_00000500"]
    assert manager.latest() == tmp_path / "step_00000500"
    assert (tmp_path / "latest").read_text().strip() == "step_00000500"
    assert manager.load().tensors["model"]["w"][0].item() == 500.0
    # Saving an existing step again replaces it.
    manager.save(500, {"model": {"w": torch.zeros(2)}}, state={"step": 500, "again": True})
    assert manager.load().state["again"] is True and len(manager.checkpoints()) == 2


def test_a_crash_mid_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    manager = CheckpointManager(tmp_path)
    first = manager.save(1, {"model": {"w": torch.ones(3)}}, state={"step": 1})

    real_write_json = checkpoint_module._write_json

    def crash_while_writing_state(path: Path, text: str) -> None:
        if path.name == "state.json":
            path.write_text(text[: len(text) // 2])  # a partial file, then the process dies
            raise OSError("simulated crash")
        real_write_json(path, text)

    monkeypatch.setattr(checkpoint_module, "_write_json", crash_while_writing_state)
    with pytest.raises(OSError, match="simulated crash"):
        manager.save(2, {"model": {"w": torch.full((3,), 2.0)}}, state={"step": 2})
    monkeypatch.undo()

    assert manager.latest() == first
    assert manager.checkpoints() == [first]
    assert not (tmp_path / "step_00000002").exists()
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # the debris is hidden
    assert manager.load().tensors["model"]["w"].tolist() == [1.0, 1.0, 1.0]

    # A stale pointer (a crash between rename and pointer update) falls back to the newest complete checkpoint.
    (tmp_path / "latest").write_text("step_00000099\n")
    assert manager.latest() == first

    # The next save cleans the debris and completes normally.
    manager.save(2, {"model": {"w": torch.full((3,), 2.0)}}, state={"step": 2})
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert manager.latest() == tmp_path / "step_00000002"


def test_a_crash_while_pruning_leaves_no_partial_step_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2):
        manager.save(
            step, {"model": {"w": torch.full((3,), float(step))}}, optimizer_state={"x": 1}, state={"step": step}
        )
    real_rmtree = shutil.rmtree

    def killed_midway(path, ignore_errors=False):  # deletes the first files, then the process dies
        for name in ("state.json", "model.safetensors"):
            (Path(path) / name).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        manager.save(3, {"model": {"w": torch.full((3,), 3.0)}}, optimizer_state={"x": 1}, state={"step": 3})
    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", real_rmtree)

    step_directories = sorted(p.name for p in tmp_path.glob("step_*"))
    assert step_directories == ["step_00000002", "step_00000003"]  # whole checkpoints only, under step names
    assert all((tmp_path / name / "state.json").is_file() for name in step_directories)
    assert [p.name.startswith(".tmp-pruned-step_00000001") for p in tmp_path.glob(".tmp-*")] == [True]
    assert manager.load().step == 3
    manager.save(4, {"model": {"w": torch.full((3,), 4.0)}}, state={"step": 4})  # the next save cleans up
    assert not list(tmp_path.glob(".tmp-*"))
    assert [p.name for p in manager.checkpoints()] == ["step_00000003", "step_00000004"]


def test_pruning_keeps_the_newest_good_checkpoint(tmp_path: Path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step, good in ((1, True), (2, True), (3, False), (4, False), (5, False)):
        manager.save(step, {"model": {"w": torch.zeros(1)}}, state={"step": step, "good": good})
    assert [p.name for p in manager.checkpoints()] == ["step_00000002", "step_00000004", "step_00000005"]
    assert manager.newest_good() == tmp_path / "step_00000002"
    assert manager.newest_good(max_step=1) is None


def test_non_serialisable_state_fails_before_writing(tmp_path: Path):
    manager = CheckpointManager(tmp_path)
    with pytest.raises(TypeError):
        manager.save(1, {"model": {"w": torch.ones(1)}}, state={"rng": torch.get_rng_state()})
    assert manager.latest() is None


# ---------------------------------------------------------------- metrics


def test_metric_logger_writes_jsonl_and_tensorboard(tmp_path: Path):
    with MetricLogger(tmp_path, tensorboard=True) as metrics:
        metrics.log(0, {"loss": 5.5, "accuracy": torch.tensor(12.5), "lr": 3e-4})
        metrics.log(10, {"loss": 4.0}, prefix="val")
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 0 and lines[0]["train/loss"] == 5.5 and lines[0]["train/accuracy"] == 12.5
    assert lines[1]["step"] == 10 and lines[1]["val/loss"] == 4.0
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))

    quiet = MetricLogger(tmp_path / "rank1", enabled=False)
    quiet.log(0, {"loss": 1.0})
    quiet.close()
    assert not (tmp_path / "rank1").exists()


def test_metric_logger_without_tensorboard_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with caplog.at_level(logging.INFO, logger="nextscale"), MetricLogger(tmp_path) as metrics:
        metrics.log(1, {"loss": 2.0})
        metrics.log(2, {"loss": 1.0})
    assert sum("TensorBoard logging is off" in record.message for record in caplog.records) == 1
    assert any("train step 2 | loss 1" in record.message for record in caplog.records)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_configure_logging_is_quiet_off_rank_zero(tmp_path: Path):
    package_logger = logging.getLogger("nextscale")
    saved = (list(package_logger.handlers), package_logger.level, package_logger.propagate)
    print_before = builtins.print
    try:
        configure_logging(is_main_process=False)
        assert package_logger.getEffectiveLevel() == logging.WARNING
        configure_logging(is_main_process=True, log_file=tmp_path / "log.txt")
        assert package_logger.getEffectiveLevel() == logging.INFO
        assert len([h for h in package_logger.handlers if h not in saved[0]]) == 2  # stderr + file, not stacked
        logging.getLogger("nextscale.train.test").info("hello")
        assert "hello" in (tmp_path / "log.txt").read_text()
        assert builtins.print is print_before
    finally:
        for handler in package_logger.handlers[:]:
            if handler not in saved[0]:
                package_logger.removeHandler(handler)
                handler.close()
        package_logger.setLevel(saved[1])
        package_logger.propagate = saved[2]


def test_format_eta_and_throughput():
    assert format_eta(0) == "00:00:00"
    assert format_eta(3725) == "01:02:05"
    assert format_eta(2 * 86400 + 3600 + 4) == "2d 01:00:04"
    assert format_eta(math.inf) == "--:--:--"

    meter = ThroughputMeter(smoothing=0.5)
    assert meter.update(100, seconds=1.0) == 100.0
    assert meter.update(300, seconds=1.0) == 200.0  # 0.5 * 100 + 0.5 * 300
    assert meter.eta_seconds(400) == 2.0


# ---------------------------------------------------------------- distributed helpers and EMA


def test_single_process_helpers(monkeypatch: pytest.MonkeyPatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = setup_distributed()
    assert (context.rank, context.world_size, context.backend, context.is_main_process) == (0, 1, None, True)
    assert all_reduce_mean(torch.tensor([1, 3])).tolist() == [1.0, 3.0]

    model = nn.Linear(2, 2)
    assert wrap_model(model, DistributedContext(), "ddp") is model
    compiled_like = nn.Module()
    compiled_like._orig_mod = model
    assert unwrap_model(compiled_like) is model


def test_ema_tracks_in_fp32_and_round_trips():
    model = nn.Linear(3, 2).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    ema = EMA(model, decay=0.75)
    assert all(shadow.dtype == torch.float32 for shadow in ema.shadow.values())
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(1.0)
    ema.update(model)
    assert torch.all(ema.shadow["weight"] == 1.5) and torch.all(ema.shadow["bias"] == 0.25)

    with ema.applied_to(model):
        assert torch.all(model.weight == 1.5)
    assert torch.all(model.weight == 3.0)

    other = EMA(nn.Linear(3, 2), decay=0.75)
    other.load_state_dict(ema.state_dict(), num_updates=ema.num_updates)
    target = nn.Linear(3, 2)
    other.copy_to(target)
    assert torch.all(target.weight == 1.5) and other.num_updates == 1


class TwoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _one_step(model: nn.Module, inputs: list[torch.Tensor]) -> None:
    """One AdamW step on the mean of the losses over `inputs` (what data parallelism computes)."""
    optimizer = build_optimizer(model, 1e-2, 256)
    sum(model(x).square().mean() for x in inputs).div(len(inputs)).backward()
    optimizer.step()


def _two_process_worker(rank: int, rendezvous: str, output: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
    context = setup_distributed(init_method=rendezvous)
    assert context.backend == "gloo" and context.world_size == 2
    mean = all_reduce_mean(torch.tensor([1.0 + rank, 10.0 * rank]))
    assert mean.tolist() == [1.5, 5.0]
    assert all_reduce_mean(torch.tensor([rank])).tolist() == [0.5]
    assert reduce_metrics({"loss": 2.0 + 2 * rank}, context.device) == {"loss": 3.0}

    # DDP averages the gradients of the two ranks' different batches.
    torch.manual_seed(0)
    model = wrap_model(nn.Linear(2, 1, bias=False), context, "ddp")
    model(torch.full((1, 2), float(rank + 1))).sum().backward()
    assert unwrap_model(model).weight.grad.tolist() == [[1.5, 1.5]]
    assert full_state_dict(model).keys() == {"weight"}

    # Only rank 0 writes; both return after the barrier with the checkpoint on disk.
    manager = CheckpointManager(output, is_main_process=context.is_main_process)
    path = manager.save(3, {"model": {"w": torch.tensor([float(rank)])}}, state={"writer": rank})
    assert manager.load(path).state == {"writer": 0}

    # FSDP2 on CPU: one sharded step equals a plain step on both ranks' batches; rank 0 gets the full weights.
    inputs = [torch.randn(3, 4, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    torch.manual_seed(0)
    reference = TwoBlocks()
    sharded = wrap_model(copy.deepcopy(reference), context, "fsdp")
    _one_step(reference, inputs)
    _one_step(sharded, [inputs[rank]])
    gathered = full_state_dict(sharded)
    if context.is_main_process:
        _assert_close_dict(gathered, reference.state_dict())
    else:
        assert gathered == {}
    cleanup()


def _assert_close_dict(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], msg=name)


def test_two_gloo_processes_all_reduce_mean_wrap_and_save(tmp_path: Path):
    # Most of the time goes into starting two interpreters that import torch (about 3 s on an idle 2-core box).
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    context = mp.spawn(_two_process_worker, args=(rendezvous, str(tmp_path / "ckpt")), nprocs=2, join=False)
    deadline = time.monotonic() + 120  # a hung collective fails the test instead of hanging the suite
    while not context.join(timeout=1.0):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail("the two gloo processes did not finish within 120 s")
