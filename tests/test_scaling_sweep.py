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
            "--head-width", "16", "--images", "48", "--batch-size", "8", "--evaluations", "3", "--eval-images", "16",
            "--base-lr", "0.05", "--data", "procedural", "--image-size", "8", "--num-samples", "64",
            "--seeds", "0_1", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    runs = json.loads((out / "runs.json").read_text())
    names = ["d1-seed0", "d1-seed1", "d2-seed0", "d2-seed1"]
    assert [r["name"] for r in runs] == names
    assert runs[0]["parameters"] == runs[1]["parameters"] < runs[2]["parameters"]
    assert {r["token_budget"] for r in runs} == {48 * 30}
    assert [p["step"] for p in runs[2]["points"]] == [2, 4, 6]
    assert set(runs[2]["points"][-1]) == {"step", "tokens", "pflops", "L_last", "L_avg", "Err_last", "Err_avg"}
    assert runs[0]["points"][-1]["L_last"] != runs[1]["points"][-1]["L_last"]  # the seeds train different models
    fits = json.loads((out / "fits.json").read_text())
    for axis in ("against_parameters", "against_compute"):
        assert set(fits[axis]) == {"L_last", "L_avg", "Err_last", "Err_avg"}
    for figure in ("loss_vs_parameters.png", "loss_vs_compute.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / "d2-seed0" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "eval/L_tail" in r]
    assert [r["step"] for r in evaluations] == [2, 4, 6]  # three evaluation points, the last final
    assert {r["eval/images"] for r in evaluations} == {16}  # exactly --eval-images each

    before = {run: (out / run / "metrics.jsonl").stat().st_mtime_ns for run in names}
    capsys.readouterr()
    assert cli.main(argv) == 0  # a rerun: nothing left to train, the report is written again
    assert {run: (out / run / "metrics.jsonl").stat().st_mtime_ns for run in names} == before
    assert "L_last" in capsys.readouterr().out

    # on another machine: the recorded runs count as finished, only the missing one trains, the report fits all
    recorded = tmp_path / "recorded.json"
    recorded.write_text(json.dumps([r for r in runs if r["name"] != "d2-seed1"]))
    elsewhere = tmp_path / "elsewhere"
    assert cli.main([*argv[:4], str(elsewhere), *argv[5:], "--recorded", str(recorded)]) == 0
    assert [r["name"] for r in json.loads((elsewhere / "runs.json").read_text())] == names
    assert (elsewhere / "d2-seed1" / "metrics.jsonl").is_file()
    assert [p.parent.name for p in elsewhere.glob("d*/metrics.jsonl")] == ["d2-seed1"]


def test_evaluation_steps_are_evenly_spread_and_end_at_the_last_step():
    from nextscale.experiments.scaling_config import SweepConfig

    config = SweepConfig(images=24_000, batch_size=64, evaluations=6, eval_images=960)  # 375 steps asked for
    assert config.spacing == 62 and config.steps == 372
    assert config.evaluation_steps == [62, 124, 186, 248, 310, 372]  # what docs/scaling.md describes
    for images, evaluations in ((24_000, 6), (72_000, 8), (10_000, 7), (64 * 13, 3)):
        steps = SweepConfig(images=images, batch_size=64, evaluations=evaluations, eval_images=64).evaluation_steps
        gaps = [b - a for a, b in zip([0, *steps], steps)]
        assert len(steps) == evaluations and len(set(gaps)) == 1  # none closer than the spacing
        assert abs(steps[-1] * 64 - images) <= 64 * evaluations / 2  # the token budget moves by half a spacing at most


def test_eval_images_that_are_not_whole_batches_are_refused():
    from nextscale.experiments.scaling_config import SweepConfig

    with pytest.raises(ValueError, match="multiple of batch_size"):
        SweepConfig(eval_images=1000, batch_size=64)
