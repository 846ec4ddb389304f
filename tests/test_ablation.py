"""`nextscale ablation` end to end on tiny models: the AR row and one VAR row trained on the procedural set with
compute-matched budgets, sampled, evaluated against real images and timed, and a rerun that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nextscale import cli, save_pretrained
from nextscale.data.build import DataConfig
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset

pytest.importorskip("torch_fidelity", reason="evaluation needs torch-fidelity (pip install 'nextscale[eval]')")
pytest.importorskip("matplotlib", reason="the figure needs matplotlib (pip install 'nextscale[scaling]')")


def test_a_two_row_ablation_trains_evaluates_times_and_resumes(tmp_path: Path, capsys):
    torch.manual_seed(0)
    multi = save_pretrained(tmp_path / "tok", tokenizer=Tokenizer(tokenizer_preset("debug")))
    single = save_pretrained(tmp_path / "tok1", tokenizer=Tokenizer(tokenizer_preset("debug", patch_nums=(4,))))
    test = DataConfig(name="procedural", image_size=8, num_samples=64).build("test")
    reference = np.stack([((test[i][0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy() for i in range(64)])
    np.savez(tmp_path / "reference.npz", arr_0=reference)
    out = tmp_path / "ablation"
    argv = ["ablation", "--out", str(out), "--tokenizer", str(multi), "--raster-tokenizer", str(single),
            "--base-preset", "debug", "--raster-preset", "debug", "--rows", "AR,+ attn. norm.", "--images", "32",
            "--batch-size", "8", "--samples-per-class", "3", "--sample-batch-size", "16", "--timing-images", "4",
            "--reference", str(tmp_path / "reference.npz"), "--data", "procedural", "--image-size", "8",
            "--num-samples", "64", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in results] == ["AR", "+ attn. norm."]
    ar, var = results
    assert ar["relative_cost"] == 1.0 and var["relative_cost"] > 0
    assert ar["train_pflops"] == pytest.approx(var["train_pflops"], rel=0.25)  # the same training compute
    assert ar["train_images"] > var["train_images"]  # the cheaper next-token model sees more images for it
    assert all(r["num_samples"] == 30 and np.isfinite(r["fid"]) for r in results)
    assert "| AR |" in (out / "table.md").read_text()
    for picture in ("ablation_fid_vs_cost.png", "ablation_samples.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"

    trained = {key: (out / "runs" / key / "metrics.jsonl").stat().st_mtime_ns for key in ("ar", "var-full")}
    assert cli.main(argv) == 0  # the rerun trains and samples nothing again
    assert {key: (out / "runs" / key / "metrics.jsonl").stat().st_mtime_ns for key in trained} == trained
