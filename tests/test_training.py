"""End-to-end training on the `debug` presets (8 px images, scales 1,2,3,4, vocabulary 64), CPU, fp32.

Both losses fall on a tiny procedural dataset, each model memorises one batch, and the lr that a real run logs
follows the recipe: base_lr × batch / 256 × the schedule's multiplier.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import write_debug_tokenizer

from nextscale.data.build import DataConfig
from nextscale.data.procedural import PROCEDURAL_CLASSES
from nextscale.pretrained import from_pretrained, read_metadata
from nextscale.scaling import training_flops_per_image
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset
from nextscale.train.checkpoint import CheckpointManager
from nextscale.train.loop import LoopConfig, run
from nextscale.train.tokenizer_task import TokenizerTask, TokenizerTrainConfig, psnr
from nextscale.train.var_task import VARTask, VARTrainConfig

IMAGE_SIZE = 8  # what the debug tokenizer takes: final scale 4 × downsampling 2


def loop_config(output_dir: Path, **overrides) -> LoopConfig:
    settings = dict(
        output_dir=str(output_dir),
        precision="fp32",
        log_every=1,
        eval_every=0,
        eval_batches=1,
        save_every=1000,
        progress=False,
    )
    return LoopConfig(**{**settings, **overrides})


def procedural(num_samples: int) -> DataConfig:
    return DataConfig(name="procedural", image_size=IMAGE_SIZE, num_samples=num_samples)


def train_records(output_dir: Path) -> list[dict]:
    """The `train/...` lines of metrics.jsonl, in order."""
    lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "train/loss" in record]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_both_losses_fall_on_a_tiny_dataset(tmp_path: Path):
    data = procedural(64)
    tokenizer_dir = run(
        TokenizerTask(TokenizerTrainConfig(preset="debug", data=data)),
        loop_config(tmp_path / "tokenizer", steps=20, batch_size=16, base_lr=0.05, weight_decay=0.0),
    )
    losses = [record["train/loss"] for record in train_records(tmp_path / "tokenizer")]
    assert len(losses) == 20 and all(math.isfinite(loss) for loss in losses)
    assert mean(losses[-5:]) < 0.75 * losses[0], losses

    # The transformer trains on the tokenizer the first stage exported.
    export = run(
        VARTask(VARTrainConfig(tokenizer=str(tokenizer_dir), preset="debug", data=data)),
        loop_config(tmp_path / "var", steps=20, batch_size=16, base_lr=0.1),
    )
    losses = [record["train/loss"] for record in train_records(tmp_path / "var")]
    assert losses[0] == pytest.approx(math.log(64), abs=0.05)  # a fresh model is close to uniform over 64 codes
    assert mean(losses[-5:]) < losses[0] - 0.8, losses

    tokenizer, model = from_pretrained(export)
    assert tokenizer.config.vocab_size == model.token_space.vocab_size == 64
    assert read_metadata(export)["classes"] == PROCEDURAL_CLASSES


def test_var_memorises_one_batch(tmp_path: Path):
    data = procedural(8)  # the batch is the whole dataset: every step sees the same 8 token maps
    export = run(
        VARTask(VARTrainConfig(tokenizer=write_debug_tokenizer(tmp_path / "tokenizer"), preset="debug", data=data,
                               model={"label_dropout": 0.0})),
        loop_config(tmp_path / "var", steps=60, batch_size=8, base_lr=0.2, weight_decay=0.0, warmup_steps=0),
    )  # fmt: skip
    assert train_records(tmp_path / "var")[-1]["train/loss"] < 0.05

    tokenizer, model = from_pretrained(export)
    images, labels = zip(*(data.build("train")[i] for i in range(8)))
    token_maps = tokenizer.encode(torch.stack(images))
    targets_BL = torch.cat([t.flatten(1) for t in token_maps], dim=1)
    with torch.no_grad():
        logits_BLV = model(torch.tensor(labels), tokenizer.teacher_input(token_maps))
    assert (logits_BLV.argmax(-1) == targets_BL).float().mean() == 1.0  # every token of every image predicted


def test_tokenizer_memorises_one_batch(tmp_path: Path):
    data = procedural(8)
    images_BCHW = torch.stack([data.build("train")[i][0] for i in range(8)])

    def reconstruction_psnr(tokenizer: Tokenizer) -> float:
        with torch.no_grad():
            return float(psnr(tokenizer.eval().decode(tokenizer.encode(images_BCHW)), images_BCHW).mean())

    torch.manual_seed(0)  # the task builds its tokenizer right after seeding with the loop seed
    at_init = reconstruction_psnr(Tokenizer(tokenizer_preset("debug")))
    export = run(
        TokenizerTask(TokenizerTrainConfig(preset="debug", data=data)),
        loop_config(tmp_path, steps=60, batch_size=8, base_lr=0.3, weight_decay=0.0, warmup_steps=0),
    )
    trained, _ = from_pretrained(export)
    assert reconstruction_psnr(trained) > at_init + 5.0  # dB


def test_logged_lr_and_optimizer_groups_follow_the_recipe(tmp_path: Path):
    base_lr, batch_size, steps = 1e-3, 16, 12
    run(
        VARTask(VARTrainConfig(tokenizer=write_debug_tokenizer(tmp_path / "tokenizer"), preset="debug",
                               data=procedural(32))),
        loop_config(tmp_path / "var", steps=steps, batch_size=batch_size, grad_accumulation=2, base_lr=base_lr,
                    warmup_steps=3, lr_schedule="lin0", final_lr_ratio=0.1, weight_decay=0.05,
                    final_weight_decay=0.1, save_every=steps),
    )  # fmt: skip
    peak_lr = base_lr * batch_size / 256  # the whole optimizer step's images, accumulation included
    # lin0 by hand: warmup from 0.005 over 3 steps, flat for 5% of the 8 decay steps, then linear to 0.1 at step 11
    multipliers = {0: 0.005, 1: 0.005 + 0.995 / 3, 3: 1.0, 4: 0.1 + 0.9 * (1 - 1 / 8) / 0.95, 7: 0.1 + 0.9 * 0.5 / 0.95}
    multipliers[11] = 0.1
    records = {record["step"]: record for record in train_records(tmp_path / "var")}
    for step, multiplier in multipliers.items():  # metrics of step s (0-based) are logged as step s + 1
        assert records[step + 1]["train/lr"] == pytest.approx(peak_lr * multiplier, rel=1e-9), step

    def weight_decay(step: int) -> float:  # half a cosine from 0.05 to 0.1 over the run
        return 0.1 + (0.05 - 0.1) * (0.5 + 0.5 * math.cos(math.pi * step / (steps - 1)))

    for step in (0, 4, 11):
        assert records[step + 1]["train/weight_decay"] == pytest.approx(weight_decay(step), rel=1e-9), step

    # cumulative training compute, logged with every record: linear in the images seen
    tokenizer, model = from_pretrained(tmp_path / "var" / "model")
    per_image = training_flops_per_image(model.config, tokenizer.token_space)
    for step, record in records.items():
        assert record["train/pflops"] == pytest.approx(step * batch_size * per_image / 1e15, rel=1e-12)

    # The optimizer state in the final checkpoint: the recipe's two groups, at the last step's lr and weight decay.
    groups = CheckpointManager(tmp_path / "var" / "checkpoints").load().optimizer["model"]["param_groups"]
    decay, no_decay = groups
    decayed, not_decayed = set(decay["param_names"]), set(no_decay["param_names"])
    assert {"head.weight", "class_embed.weight", "token_embed.weight", "blocks.0.attn.qkv.weight"} <= decayed
    assert {"pos_embed", "start_pos", "level_embed.weight", "head.bias", "blocks.0.attn.logit_scale"} <= not_decayed
    assert not any(name.endswith("bias") for name in decayed)
    assert decay["lr"] == no_decay["lr"] == pytest.approx(peak_lr * 0.1, rel=1e-9)
    assert decay["weight_decay"] == pytest.approx(0.1) and no_decay["weight_decay"] == 0.0
    assert tuple(decay["betas"]) == (0.9, 0.95)


def test_train_tokenizer_then_train_works_for_any_vocabulary_and_schedule(tmp_path: Path):
    """The transformer takes its token space from the tokenizer it loads: a tokenizer trained with its own
    vocabulary and schedule trains a transformer through the CLI with no flag repeating them."""
    from nextscale import cli, generate

    common = ["--data", "procedural", "--num-samples", "16", "--image-size", "8", "--steps", "2", "--batch-size",
              "4", "--precision", "fp32", "--eval-every", "0", "--eval-batches", "1", "--no-progress"]  # fmt: skip
    tokenizer_out = tmp_path / "tokenizer"
    cli.main(["train-tokenizer", "--preset", "debug", "--vocab-size", "24", "--patch-nums", "1_2_4",
              "--out", str(tokenizer_out), *common])  # fmt: skip
    cli.main(["train", "--tokenizer", str(tokenizer_out / "model"), "--preset", "debug", "--depth", "1",
              "--out", str(tmp_path / "var"), *common])  # fmt: skip
    tokenizer, model = from_pretrained(tmp_path / "var" / "model")
    assert model.token_space == tokenizer.token_space
    assert (model.token_space.vocab_size, model.token_space.patch_nums) == (24, (1, 2, 4))
    assert model.config.depth == 1 and model.head.out_features == 24
    out = generate(model, tokenizer, [0, 1], seed=0)
    assert [tuple(m.shape[1:]) for m in out.token_maps] == [(1, 1), (2, 2), (4, 4)]


def test_the_next_token_baseline_trains_exports_and_samples(tmp_path: Path):
    """`train --architecture raster` on a one-scale tokenizer: the loss falls, the export loads as the raster model,
    and the pipeline samples from it."""
    from nextscale import Pipeline, cli
    from nextscale.model.raster import RasterTransformer

    common = ["--data", "procedural", "--num-samples", "16", "--image-size", "8", "--batch-size", "8",
              "--precision", "fp32", "--eval-every", "0", "--eval-batches", "1", "--no-progress"]  # fmt: skip
    cli.main(["train-tokenizer", "--preset", "debug", "--patch-nums", "4", "--steps", "2",
              "--out", str(tmp_path / "tokenizer"), *common])  # fmt: skip
    tokenizer = str(tmp_path / "tokenizer" / "model")
    cli.main(["train", "--architecture", "raster", "--preset", "debug", "--tokenizer", tokenizer, "--steps", "30",
              "--log-every", "1", "--base-lr", "0.1", "--out", str(tmp_path / "ar"), *common])  # fmt: skip
    losses = [record["train/loss"] for record in train_records(tmp_path / "ar")]
    assert losses[0] == pytest.approx(math.log(64), abs=0.3)  # a fresh model: near uniform over the 64 codes
    assert losses[-1] < losses[0] - 1.0, losses
    pipe = Pipeline.from_pretrained(tmp_path / "ar" / "model")
    assert isinstance(pipe.model, RasterTransformer)
    assert pipe.generate([0, 1], seed=0).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="next-token baseline cannot edit"):
        pipe.edit(torch.rand(1, 3, 8, 8), torch.eye(4))


def test_the_model_and_the_trainer_drop_labels_by_one_rule(make_debug_pair):
    """`nextscale.label_dropout.drop_labels` is the rule: the models' own dropout (global generator, the official
    draw) gives what it gives on the same draws, and the trainer's draws for one step are one global batch's, each
    rank taking its share, so 1 and 2 processes drop the same labels."""
    from nextscale.distributed import DistributedContext
    from nextscale.label_dropout import drop_labels
    from nextscale.model.raster import RasterTransformer, raster_preset
    from nextscale.train.loop import StepContext

    tokenizer, model = make_debug_pair()
    raster = RasterTransformer(
        raster_preset("debug"), Tokenizer(tokenizer_preset("debug", patch_nums=(4,))).token_space
    )
    labels = torch.arange(64) % 10
    for module in (model, raster):
        torch.manual_seed(1234)
        by_model = module.drop_labels(labels, 0.5)
        torch.manual_seed(1234)
        assert torch.equal(by_model, drop_labels(labels, 0.5, module.config.null_class))
        assert 0 < (by_model == module.config.null_class).sum() < 64

    def draws(world_size: int, rank: int, step: int = 7) -> torch.Tensor:
        task = VARTask(VARTrainConfig(preset="debug"))
        task.ctx = StepContext(LoopConfig(batch_size=16, seed=5), DistributedContext(rank=rank, world_size=world_size))
        return task.label_dropout_draws(step)

    assert torch.equal(torch.cat([draws(2, 0), draws(2, 1)]), draws(1, 0))
    assert not torch.equal(draws(1, 0, step=8), draws(1, 0))  # keyed by the step
