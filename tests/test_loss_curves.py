"""Stored loss curves of the debug presets: a change to training (loss weighting, schedule, optimizer groups,
initialisation, data order, quantizer) that moves the numbers fails here, even when every other test stays green.

Regenerate after an intended change with `python tests/test_loss_curves.py` and say why in the commit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from nextscale.data.build import DataConfig
from nextscale.pretrained import save_pretrained
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset
from nextscale.train.loop import LoopConfig, run
from nextscale.train.tokenizer_task import TokenizerTask, TokenizerTrainConfig
from nextscale.train.var_task import VARTask, VARTrainConfig

CURVES = Path(__file__).resolve().parent / "assets" / "debug_loss_curves.json"
KEYS = ("loss", "L_mean", "L_tail", "acc_mean", "grad_norm", "lr")


def train_curves(directory: Path) -> dict[str, list[dict[str, float]]]:
    """20 fp32 steps of the debug tokenizer and of the debug transformer on its tokens (procedural data)."""
    data = DataConfig(name="procedural", image_size=8, num_samples=64)
    loop = dict(steps=20, batch_size=8, precision="fp32", log_every=1, eval_every=0, eval_batches=1, progress=False)
    run(TokenizerTask(TokenizerTrainConfig(preset="debug", data=data)),
        LoopConfig(output_dir=str(directory / "tokenizer"), base_lr=0.02, weight_decay=0.0, **loop))  # fmt: skip
    torch.manual_seed(0)
    tokenizer = save_pretrained(directory / "frozen", tokenizer=Tokenizer(tokenizer_preset("debug")))
    run(VARTask(VARTrainConfig(tokenizer=str(tokenizer), preset="debug", data=data)),
        LoopConfig(output_dir=str(directory / "var"), base_lr=0.05, **loop))  # fmt: skip
    curves = {}
    for name in ("tokenizer", "var"):
        lines = (directory / name / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        curves[name] = [
            {key: r[f"train/{key}"] for key in KEYS if f"train/{key}" in r} for r in records if "train/loss" in r
        ]
    return curves


def test_training_reproduces_the_stored_loss_curves(tmp_path: Path):
    stored = json.loads(CURVES.read_text())
    curves = train_curves(tmp_path)
    for name in ("tokenizer", "var"):
        assert len(curves[name]) == len(stored[name]) == 20, name
        for step, (ours, expected) in enumerate(zip(curves[name], stored[name]), start=1):
            assert ours.keys() == expected.keys(), (name, step)
            for key, value in expected.items():
                # float rounding differs a little between CPUs (and grows over the steps); a change of method does not
                assert ours[key] == pytest.approx(value, rel=2e-3, abs=1e-6), f"{name} step {step}: {key}"


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)  # as the test session runs
    with tempfile.TemporaryDirectory() as folder:
        CURVES.write_text(json.dumps(train_curves(Path(folder)), indent=1) + "\n")
    print(f"wrote {CURVES}", file=sys.stderr)
