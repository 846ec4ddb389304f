"""docs/scripts/evaluation_figures.py: docs/evaluation.md's tables come from docs/data/evaluation's records alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the plot needs matplotlib (pip install 'nextscale[scaling]')")

from conftest import DOCS, load_docs_script  # noqa: E402


def _record(fid: float, cfg: float = 1.5, top_k: int = 0, seed: int = 0, samples: int = 2000, **extra) -> dict:
    quality = {"fid": fid, "inception_score": 5.0, "kid": 0.01, "precision": 0.8, "recall": 0.4,
               "class_accuracy": 0.9, "num_samples": samples}  # fmt: skip
    settings = {"cfg": cfg, "top_k": top_k, "top_p": 0.0, "more_smooth": False}
    return {**quality, "settings": settings, "sample_seed": seed, **extra}


def test_the_tables_come_from_the_records_and_check_notices_a_change(tmp_path: Path):
    figures = load_docs_script("evaluation_figures")
    data = tmp_path / "data"
    data.mkdir()
    records = {f"sweep-cfg{c:g}-k{k}-p0": _record(3 + c - k / 100, c, k) for c in (1.0, 2.0) for k in (0, 112)}
    records |= {f"preset-seed{s}": _record(3.0 + 0.1 * s, seed=s) for s in (0, 1, 2)}
    records |= {"preset-10k": _record(2.9, samples=10_000), "floor_train": _record(0.04, samples=60_000),
                "floor_reconstruction": _record(1.16, samples=10_000, reconstruction_psnr=27.96),
                "preset": {"settings": _record(0)["settings"], "grid_seconds_best_of_3": 6.5}}  # fmt: skip
    for name, record in records.items():
        (data / f"{name}.json").write_text(json.dumps(record))
    document = tmp_path / "evaluation.md"
    document.write_text("".join(f"<!-- evaluation:{n} -->\nold\n<!-- /evaluation:{n} -->\n" for n in figures.SECTIONS))
    argv = ["--data", str(data), "--document", str(document), "--plot", str(tmp_path / "plot.png")]
    assert figures.main([*argv, "--check"]) == 1
    assert figures.main(argv) == 0 and figures.main([*argv, "--check"]) == 0
    text = document.read_text()
    assert "| 2,000 samples, mean ± sd over 3 seeds | 3.100 ± 0.100 |" in text
    assert (
        "| fid | ≤ 3.5 | 3.100 | yes |" in text
        and "| 80-image grid, start-up included (s) | < 15 | 6.5 | yes |" in text
    )
    assert "27.96 dB" in text and text.count("| cfg ") == 4
    (data / "preset-seed2.json").write_text(json.dumps(_record(9.0, seed=2)))
    assert figures.main([*argv, "--check"]) == 1


@pytest.mark.skipif(
    not (DOCS / "data" / "evaluation" / "fmnist").is_dir(), reason="docs/data/evaluation/fmnist not recorded"
)
def test_docs_evaluation_md_is_what_its_data_gives():
    assert load_docs_script("evaluation_figures").main(["--check"]) == 0
