"""`nextscale scaling` end to end on tiny models: two sizes trained on the procedural set, the fits, both figures and
the table written, and a rerun that resumes (skips the finished runs) instead of training again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nextscale import cli, save_pretrained
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset

pytest.importorskip("matplotlib", reason="the figures need matplotlib (pip install 'nextscale[scaling]')")


def test_a_two_size_sweep_trains_fits_plots_and_resumes(tmp_path: Path, capsys):
    torch.manual_seed(0)
    tokenizer = save_pretrained(tmp_path / "tokenizer", tokenizer=Tokenizer(tokenizer_preset("debug")))
    out = tmp_path / "sweep"
    argv = ["scaling", "--tokenizer", str(tokenizer), "--out", str(out), "--depths", "1,2", "--width-per-depth", "16",
            "--head-width", "16", "--images", "48", "--batch-size", "8", "--evaluations", "3", "--eval-images", "8",
            "--base-lr", "0.05", "--data", "procedural", "--image-size", "8", "--num-samples", "64",
            "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    runs = json.loads((out / "runs.json").read_text())
    assert [r["name"] for r in runs] == ["d1", "d2"]
    assert runs[0]["parameters"] < runs[1]["parameters"] and runs[0]["tokens"] == runs[1]["tokens"] == 48 * 30
    fits = json.loads((out / "fits.json").read_text())
    for axis in ("against_parameters", "against_compute"):
        assert set(fits[axis]) == {"L_last", "L_avg", "Err_last", "Err_avg"}
    for figure in ("loss_vs_parameters.png", "loss_vs_compute.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / "d2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/L_tail" in r] == [2, 4, 6]  # three evaluation points, the last final

    before = {run: (out / run / "metrics.jsonl").stat().st_mtime_ns for run in ("d1", "d2")}
    capsys.readouterr()
    assert cli.main(argv) == 0  # a rerun: nothing left to train, the report is written again
    assert {run: (out / run / "metrics.jsonl").stat().st_mtime_ns for run in ("d1", "d2")} == before
    assert "L_last" in capsys.readouterr().out
