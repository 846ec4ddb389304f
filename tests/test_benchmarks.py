"""The benchmark scripts run end to end at toy sizes (a smoke test: figures come from real runs, never from tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
