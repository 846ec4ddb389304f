"""The benchmark scripts run end to end at toy sizes (a smoke test: figures come from real runs, never from tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DOCS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_side_by_side_harness_runs_without_the_official_code():
    command = [sys.executable, str(BENCHMARKS / "official_side_by_side.py"), "--tokenizer", "fmnist-32", "--depth", "1",
               "--batch-sizes", "1,2", "--repeats", "1", "--train-depth", "1", "--train-batch-size", "2",
               "--device", "cpu"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for row in (
        "sampling fp32 b1 nextscale",
        "sampling fp32 b2 nextscale",
        "decoder fp32 b2 nextscale",
        "fraction of matmul peak",
        "training fp32 d1",
    ):
        assert row in result.stdout, result.stdout


def test_next_scale_against_next_token_benchmark_runs():
    command = [sys.executable, str(BENCHMARKS / "sampling_speed.py"), "--preset", "debug", "--batch-size", "2",
               "--repeats", "1", "--device", "cpu"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "raster (next-token)" in result.stdout and "faster than the next-token baseline" in result.stdout


def test_the_gpu_script_runs_on_the_cpu_at_toy_sizes():
    """benchmarks/gpu.sh, the script a lent accelerator runs, checked end to end on the CPU: the device-token check,
    then the side-by-side rows with and without --fast and the peak memory, per batch size."""
    command = ["bash", str(BENCHMARKS / "gpu.sh"), "--device", "cpu", "--depth", "1", "--batches", "1 2",
               "--tokenizer", "fmnist-32", "--precisions", "fp32", "--repeats", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2080 of 2080 greedy tokens identical" in result.stdout
    for row in ("sampling fp32 b1 nextscale without fast", "sampling fp32 b2 peak memory", "batches 1 2"):
        assert row in result.stdout, result.stdout


def test_the_side_by_side_report_renders_the_benchmarks_raw_numbers(tmp_path: Path):
    """The records `--json` writes turn into the table of docs/performance.md; --check notices a stale table."""
    from conftest import load_docs_script

    records = [{"part": "same tokens", "batch": 2, "identical": 260, "total": 260},
               {"part": "sampling", "precision": "fp32", "batch": 2,
                "seconds": {"official": [2.0, 2.2], "nextscale": [1.6, 1.7]}},
               {"part": "decoder", "precision": "fp32", "batch": 2, "seconds": {"nextscale": [0.5]}},
               {"part": "transformer", "precision": "fp32", "batch": 2, "flops": 4e12, "seconds": 40.0,
                "matmul_peak_flops_per_s": 2e11}]  # fmt: skip
    data = tmp_path / "side_by_side.json"
    data.write_text(json.dumps({"command": "python benchmarks/official_side_by_side.py", "records": records,
                                "machine": {"cpu": "a CPU", "threads": 2, "torch": "2"}}))  # fmt: skip
    document = tmp_path / "performance.md"
    document.write_text("# P\n<!-- side_by_side:table -->\nold\n<!-- /side_by_side:table -->\n")
    script = load_docs_script("side_by_side_report")
    argv = ["--data", str(data), "--document", str(document)]
    assert script.main([*argv, "--check"]) == 1
    assert script.main(argv) == 0 and script.main([*argv, "--check"]) == 0
    text = document.read_text()
    assert "| sampling with decode (fp32) | 2 | 2.00 s | 1.60 s | **1.25×** | ±10 % |" in text
    assert "decoder alone" not in text  # no official timing: no row
    assert "260 of 260 drawn tokens identical" in text and "50.0% of the measured fp32 matmul peak" in text


def test_the_side_by_side_benchmark_writes_its_raw_numbers(tmp_path: Path):
    out = tmp_path / "run.json"
    command = [sys.executable, str(BENCHMARKS / "official_side_by_side.py"), "--tokenizer", "fmnist-32", "--depth", "1",
               "--batch-sizes", "2", "--repeats", "2", "--train-depth", "0", "--device", "cpu",
               "--json", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run = json.loads(out.read_text())
    parts = {r["part"]: r for r in run["records"]}
    assert len(parts["sampling"]["seconds"]["nextscale"]) == 2 and parts["transformer"]["flops"] > 0
    assert "--json" in run["command"] and run["machine"]["threads"] >= 1


@pytest.mark.skipif(not (DOCS / "data" / "side_by_side.json").is_file(), reason="not measured yet (issue 20)")
def test_docs_performance_md_side_by_side_is_what_its_data_gives():
    from conftest import load_docs_script

    assert load_docs_script("side_by_side_report").main(["--check"]) == 0
