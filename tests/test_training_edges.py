"""Runs that end before they have anything to show: what the command says, its exit status, and what it leaves in
the run folder.

Every case goes through `nextscale.cli.main` as a user's command does (debug presets, 8 px procedural images, CPU,
fp32) and compares the run folder's files before and after.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import write_debug_tokenizer

from nextscale import cli


def folder_contents(folder: Path) -> dict[str, str] | None:
    """{relative path: sha256} of every file under `folder`; None when there is no folder."""
    if not folder.exists():
        return None
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def failing(arguments: list[str], status: int, capsys: pytest.CaptureFixture) -> str:
    """Run the command; it must exit with `status` and end with one error line, no traceback. Returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == status
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    command_lines = [line for line in lines if line.startswith(f"nextscale {arguments[0]}:")]
    assert command_lines == [lines[-1]], lines[-5:]  # one line, the last
    return lines[-1]


def tokenizer_run(out: Path, *extra: str) -> list[str]:
    return ["train-tokenizer", "--data", "procedural", "--image-size", "8", "--preset", "debug", "--num-samples",
            "16", "--batch-size", "8", "--steps", "3", "--save-every", "3", "--eval-every", "0", "--precision",
            "fp32", "--no-progress", "--out", str(out), *extra]  # fmt: skip


def transformer_run(tokenizer: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--tokenizer", tokenizer, "--data", "procedural", "--image-size", "8", "--preset", "debug",
            "--num-samples", "16", "--batch-size", "8", "--steps", "3", "--save-every", "3", "--eval-every", "0",
            "--precision", "fp32", "--no-progress", "--out", str(out), *extra]  # fmt: skip


# ------------------------------------------------------------------------------------------------------- divergence


def test_a_tokenizer_run_that_diverges_before_its_first_checkpoint_says_so(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert folder_contents(out) is None
    diverging = (
        "--steps",
        "60",
        "--save-every",
        "1000",
        "--batch-size",
        "64",
        "--num-samples",
        "64",
        "--base-lr",
        "1e3",
    )
    line = failing(tokenizer_run(out, *diverging), 1, capsys)
    assert line.startswith("nextscale train-tokenizer: error: tokenizer: loss is ")
    assert "A rerun starts from scratch" in line and "lower --base-lr (now 1000)" in line
    assert "lower --grad-clip (now 2)" in line
    assert folder_contents(out) is None  # nothing saved, nothing left: its log went to the console


def test_a_transformer_run_that_diverges_before_its_first_checkpoint_says_so(tmp_path: Path, capsys):
    tokenizer = write_debug_tokenizer(tmp_path / "tokenizer")
    out = tmp_path / "run"
    line = failing(
        transformer_run(tokenizer, out, "--steps", "60", "--save-every", "1000", "--base-lr", "1e6"), 1, capsys
    )
    assert line.startswith("nextscale train: error: var: loss is ")
    assert "A rerun starts from scratch" in line and "lower --base-lr (now 1e+06)" in line
    assert folder_contents(out) is None


# ------------------------------------------------------------------------------- runs that train nothing at all


def test_a_run_refused_before_its_first_step_leaves_no_folder_behind(tmp_path: Path, capsys):
    tokenizer = write_debug_tokenizer(tmp_path / "tokenizer")
    out = tmp_path / "run"
    assert folder_contents(out) is None
    line = failing(transformer_run(tokenizer, out, "--image-size", "16"), 2, capsys)
    assert "the data is 16 px but the tokenizer takes 8 px images" in line
    assert folder_contents(out) is None  # not even train.log


def test_a_refused_resume_leaves_the_run_folder_as_it_was(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert cli.main(tokenizer_run(out)) == 0
    before = folder_contents(out)
    assert {"train.log", "metrics.jsonl", "model/tokenizer/model.safetensors"} <= set(before)
    line = failing(tokenizer_run(out, "--vocab-size", "32"), 2, capsys)
    assert "tokenizer.tokenizer = {}, this run has {'vocab_size': 32}" in line
    assert folder_contents(out) == before  # train.log included: the refusal is on the console only


def test_fewer_steps_than_the_run_has_done_are_refused_not_exported_again(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert cli.main(tokenizer_run(out)) == 0  # 3 steps
    before = folder_contents(out)
    line = failing(tokenizer_run(out, "--steps", "2"), 2, capsys)
    assert line == (
        f"nextscale train-tokenizer: error: the run in {out} is already at step 3, past the 2 steps asked for: ask for "
        "more steps to train it further, or use another --out or --restart to start over"
    )
    assert folder_contents(out) == before
    assert cli.main(tokenizer_run(out)) == 0  # the same length again: resumes at its end and exports, as before
