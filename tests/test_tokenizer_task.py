"""The tokenizer's training step beyond its losses: codebook usage as training sees it, dead-code restarts with a
grace period, and the EMA of the weights that is exported (debug preset, CPU, fp32)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from nextscale.data.build import DataConfig
from nextscale.data.sampler import ResumableDistributedSampler
from nextscale.distributed import DistributedContext
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset
from nextscale.train.checkpoint import CheckpointManager
from nextscale.train.loop import LoopConfig, StepContext, run
from nextscale.train.tokenizer_task import TokenizerTask, TokenizerTrainConfig

BATCH = 8
DATA = DataConfig(name="procedural", image_size=8, num_samples=32)


def loop_config(output_dir, **overrides) -> LoopConfig:
    settings = dict(
        output_dir=str(output_dir), steps=3, batch_size=BATCH, base_lr=0.05, precision="fp32", log_every=1,
        eval_every=0, eval_batches=1, save_every=1000, progress=False,
    )  # fmt: skip
    return LoopConfig(**{**settings, **overrides})


def set_up(tmp_path, loop_overrides=None, **config) -> tuple[TokenizerTask, list[list]]:
    """A debug tokenizer task set up as `run` sets it up, and its first batches of sample keys."""
    task = TokenizerTask(TokenizerTrainConfig(preset="debug", data=DATA, **config))
    task.setup(StepContext(loop_config(tmp_path, **(loop_overrides or {})), DistributedContext()))
    batches = iter(ResumableDistributedSampler(len(task.dataset), BATCH, seed=0))
    return task, [next(batches) for _ in range(6)]


def test_a_collapsed_codebook_shows_at_step_one(tmp_path):
    task, batches = set_up(tmp_path, dead_code_every=0)
    with torch.no_grad():  # every code the same vector: all tokens go to code 0
        codebook = task.tokenizer.quantizer.codebook.weight
        codebook.copy_(codebook[:1].expand_as(codebook))
    metrics = task.train_step(0, batches[0])
    V = codebook.shape[0]
    assert metrics["usage_all"] == 100 / V  # one code of 64 at every scale, not the 100% a uniform prior shows
    assert all(metrics[f"usage_{s}x{s}"] == 100 / V for s in task.tokenizer.config.patch_nums)


def test_usage_at_step_one_is_the_share_of_codes_the_batch_hit(tmp_path):
    task, batches = set_up(tmp_path, dead_code_every=0)
    images = torch.stack([task.dataset[key][0] for key in batches[0]])
    token_maps = task.tokenizer.encode(images)  # the weights the first step quantizes with
    V = task.tokenizer.config.vocab_size
    expected = [100 * idx.unique().numel() / V for idx in token_maps]
    metrics = task.train_step(0, batches[0])
    for side, share in zip(task.tokenizer.config.patch_nums, expected):
        assert metrics[f"usage_{side}x{side}"] == share
    assert min(expected) > 0 and max(expected) < 100


def test_restarted_codes_get_a_grace_period_and_a_fresh_ema_row(tmp_path):
    # restarts checked every step with a threshold that calls most codes dead; a restarted code waits 3 steps
    task, batches = set_up(
        tmp_path, {"ema_decay": 0.9}, dead_code_every=1, dead_code_threshold=0.995, dead_code_grace_steps=3
    )
    codebook = task.tokenizer.quantizer.codebook.weight
    restarted_at: dict[int, list[int]] = {}
    for step, keys in enumerate(batches):
        before = task.assigned_at_V.clone()
        metrics = task.train_step(step, keys)
        changed = (task.assigned_at_V != before).nonzero().flatten().tolist()
        assert len(changed) == metrics.get("codes_restarted", 0)
        for code in changed:
            restarted_at.setdefault(code, []).append(step + 1)
        if changed:  # a new vector: no usage yet, and the averaged codebook holds it as it is
            assert task.hit_counts_KV[:, changed].abs().sum() == 0
            assert torch.equal(task.ema.shadow["quantizer.codebook.weight"][changed], codebook.detach()[changed])
    assert restarted_at, "the threshold should find dead codes"
    gaps = [b - a for steps in restarted_at.values() for a, b in zip(steps, steps[1:])]
    assert gaps and min(gaps) >= 3  # restarted again, but never within the grace period


def test_ema_of_the_weights_is_checkpointed_and_exported(tmp_path):
    decay, steps = 0.5, 3
    config = TokenizerTrainConfig(preset="debug", dead_code_every=0, data=DATA)
    export = run(
        TokenizerTask(config), loop_config(tmp_path, steps=steps, save_every=1, keep_last=steps, ema_decay=decay)
    )
    torch.manual_seed(0)  # the initial weights, as setup draws them (seed 0)
    shadow = {name: p.detach().clone() for name, p in Tokenizer(tokenizer_preset("debug")).named_parameters()}
    checkpoints = CheckpointManager(tmp_path / "checkpoints")
    for path in checkpoints.checkpoints():  # after each step, shadow ← shadow + (1 - decay)(weights - shadow)
        weights = checkpoints.load(path).tensors["tokenizer"]
        shadow = {name: value.lerp(weights[name], 1 - decay) for name, value in shadow.items()}
    final = checkpoints.load()
    exported = load_file(export / "tokenizer" / "model.safetensors")
    for name, value in shadow.items():
        torch.testing.assert_close(final.tensors["ema"][name], value, rtol=0, atol=1e-7)
        torch.testing.assert_close(exported[name], value, rtol=0, atol=1e-7)
    trained = final.tensors["tokenizer"]["decoder.conv_out.weight"]
    assert not torch.allclose(exported["decoder.conv_out.weight"], trained)  # the export is the average
