"""The speed–quality frontier (nextscale.experiments.speed_quality, docs/scripts/speed_quality.py): the table comes from
docs/data/speed_quality.json alone, the fast choice respects its FID budget, and the speed phase times every option on
a real (tiny) model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import DOCS, load_docs_script

from nextscale import save_pretrained
from nextscale.experiments.speed_quality import OPTIONS, fastest_within_budget, summarized
from nextscale.model.config import var_preset
from nextscale.model.var import VAR
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset


def _quality(fids):
    return [{"sample_seed": s, "fid": f, "inception_score": 5.0, "precision": 0.8, "recall": 0.5,
             "class_accuracy": 0.9} for s, f in enumerate(fids)]  # fmt: skip


def _data() -> dict:
    def option(fids, images_per_s, latency):
        speed = {"images_per_s_batch100": images_per_s, "latency_ms_batch1": latency, "rounds": 3}
        return {"settings": {}, "prepare": {}, "quality": _quality(fids), "speed": speed}

    return {"options": {"exact": option([2.0, 2.2, 2.1], 40.0, 50.0),
                        "a little faster": option([2.2, 2.3, 2.2], 50.0, 45.0),  # +6 %: allowed
                        "much faster": option([3.0, 3.1, 2.9], 90.0, 30.0)}}  # +43 %: over the budget  # fmt: skip


def test_the_fast_choice_is_the_fastest_option_within_the_fid_budget(tmp_path: Path):
    rows = {r["name"]: r for r in summarized(_data())}
    assert rows["exact"]["fid"] == pytest.approx(2.1) and rows["exact"]["fid_sd"] == pytest.approx(0.1)
    assert rows["a little faster"]["speedup_batch100"] == pytest.approx(1.25)
    assert rows["much faster"]["speedup_batch1"] == pytest.approx(50 / 30)
    assert fastest_within_budget(list(rows.values()))["name"] == "a little faster"
    with_refiner = _data()
    with_refiner["options"]["with a refiner"] = {**with_refiner["options"]["a little faster"], "refiner": "small"}
    with_refiner["options"]["with a refiner"]["speed"] = {"images_per_s_batch100": 80.0, "latency_ms_batch1": 20.0}
    rows = summarized(with_refiner)
    assert fastest_within_budget(rows)["name"] == "a little faster"  # a recipe is one model's: not chosen


def test_the_report_rewrites_the_marked_table_and_checks_it(tmp_path: Path):
    pytest.importorskip("matplotlib")
    script = load_docs_script("speed_quality")
    data, document, figure = tmp_path / "data.json", tmp_path / "performance.md", tmp_path / "frontier.png"
    data.write_text(json.dumps(_data()))
    document.write_text("prose\n<!-- speed:frontier -->\nold\n<!-- /speed:frontier -->\nmore prose\n")
    argv = ["report", "--data", str(data), "--document", str(document), "--figure", str(figure)]
    assert script.main([*argv, "--check"]) == 1
    assert script.main(argv) == 0 and script.main([*argv, "--check"]) == 0
    text = document.read_text()
    assert "old" not in text and text.startswith("prose\n") and text.endswith("more prose\n")
    assert "| a little faster | 50.0 | 1.25× |" in text and "**a little faster**" in text
    assert figure.read_bytes()[:4] == b"\x89PNG"

    model = tmp_path / "model"
    model.mkdir()
    (model / "nextscale.json").write_text(json.dumps({"format_version": 2, "classes": ["a"]}))
    assert script.main([*argv, "--record-fast", str(model), "--check"]) == 1  # no recipe recorded yet
    assert script.main([*argv, "--record-fast", str(model)]) == 0
    meta = json.loads((model / "nextscale.json").read_text())
    assert meta["classes"] == ["a"] and meta["fast"]["measured"]["option"] == "a little faster"
    assert script.main([*argv, "--record-fast", str(model), "--check"]) == 0


def test_the_speed_phase_times_every_option_on_a_model(tmp_path: Path):
    script = load_docs_script("speed_quality")
    torch.manual_seed(0)
    tokenizer = Tokenizer(tokenizer_preset("debug"))
    model = VAR(var_preset("debug", num_classes=10), tokenizer.token_space)
    directory = save_pretrained(tmp_path / "model", tokenizer, model)
    refiner = save_pretrained(tmp_path / "refiner", tokenizer, VAR(var_preset("debug", num_classes=10, depth=1),
                                                                   tokenizer.token_space))  # fmt: skip
    data = tmp_path / "data.json"
    argv = ["speed", "--model", str(directory), "--data", str(data), "--repeats", "1", "--batch", "4"]
    assert script.main(argv) == 0
    recorded = json.loads(data.read_text())
    assert set(recorded["options"]) == {option.name for option in OPTIONS if not option.refiner}
    assert script.main([*argv, "--refiner", str(refiner)]) == 0
    recorded = json.loads(data.read_text())
    assert set(recorded["options"]) == {option.name for option in OPTIONS}
    assert recorded["options"]["refiner from scale 4"]["refiner"].startswith("refiner (0.")  # name, M parameters
    other = save_pretrained(
        tmp_path / "other", tokenizer, VAR(var_preset("debug", num_classes=10), tokenizer.token_space)
    )
    with pytest.raises(SystemExit, match="recorded with the refiner"):  # one refiner per option
        script.main([*argv, "--refiner", str(other)])
    for option in recorded["options"].values():
        assert option["speed"]["images_per_s_batch100"] > 0 and option["speed"]["latency_ms_batch1"] > 0
    assert recorded["decoder_seconds_batch100"] > 0 and recorded["decoder_nhwc_seconds_batch100"] > 0
    assert set(recorded["draw_seconds"]) == {"batch1", "batch100"}  # the token draws alone, both ways
    assert all(seconds > 0 for draws in recorded["draw_seconds"].values() for seconds in draws.values())
    assert recorded["machine"]["threads"] >= 1


@pytest.mark.skipif(
    not (DOCS / "data" / "speed_quality.json").is_file(),
    reason="docs/data/speed_quality.json not measured yet: it needs an idle machine (issue 20)",
)
def test_docs_performance_md_frontier_is_what_its_data_gives():
    assert load_docs_script("speed_quality").main(["report", "--check"]) == 0


def test_only_narrows_the_quality_phase_to_the_named_options():
    from argparse import Namespace

    script = load_docs_script("speed_quality")
    named = ["exact", "int8 + NHWC + inverse-CDF + guidance to 5"]
    chosen = script.active_options(Namespace(phase="quality", refiner=None, only=named))
    assert [option.name for option in chosen] == named
    everything = script.active_options(Namespace(phase="speed", refiner=None, only=named))  # speed times them all
    assert len(everything) == len([option for option in OPTIONS if not option.refiner])
    with pytest.raises(SystemExit, match="no option named exactt"):
        script.active_options(Namespace(phase="quality", refiner=None, only=["exactt"]))


def test_an_option_with_fewer_seeds_is_compared_with_the_exact_path_on_the_seeds_they_share():
    data = _data()
    data["options"]["exact"]["quality"] += _quality([9.0, 9.0, 9.0, 9.0, 9.0])[3:]  # seeds 3 and 4: far worse
    rows = {r["name"]: r for r in summarized(data)}
    assert rows["exact"]["seeds"] == 5 and rows["a little faster"]["seeds"] == 3
    assert rows["a little faster"]["fid_change"] == pytest.approx(6.7 / 6.3 - 1)  # seeds 0–2 only, not 2.1 → 4.9
    assert fastest_within_budget(list(rows.values()))["name"] == "a little faster"
