"""The speed–quality frontier of the training-free accelerations (docs/performance.md): which options are measured,
their records summarised against the exact path, and the `fast` recipe chosen from them.

    rows = summarized(data)              # data: docs/data/speed_quality.json
    best = fastest_within_budget(rows)   # the most images/s at batch 100 within +FID_BUDGET of the exact path's FID
    recipe = fast_recipe(data)           # what a model's nextscale.json records as "fast" (Pipeline(fast=True))

Every option is a change to the model's own sampling settings (its recorded preset: the exact path) or to how the
models are prepared (`nextscale.inference.prepare_for_inference`), or collaborative decoding with a second model.
The measuring itself (sample sets, scores, interleaved timings) is docs/scripts/speed_quality.py; the table and the
figure are `speed_quality_report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

QUALITY_KEYS = ("fid", "inception_score", "precision", "recall", "class_accuracy")
FID_BUDGET = 0.10  # the fast preset may cost at most this fraction of the exact path's FID


@dataclass(frozen=True)
class Option:
    name: str
    settings: dict = field(default_factory=dict)  # SamplingSettings fields changed from the model's preset
    prepare: dict = field(default_factory=dict)  # prepare_for_inference keywords (none: the model as loaded)
    refiner: bool = False  # collaborative decoding with the --refiner model (settings: its handover scale)


OPTIONS = (
    Option("exact"),
    Option("guidance to scale 5", {"guidance_scales": 5}),
    Option("guidance to scale 4", {"guidance_scales": 4}),
    Option("guidance to scale 3", {"guidance_scales": 3}),
    Option("prune 25 %", {"prune_ratio": 0.25}),
    Option("prune 50 %", {"prune_ratio": 0.5}),
    Option("guidance to 4 + prune 25 %", {"guidance_scales": 4, "prune_ratio": 0.25}),
    Option("NHWC decoder", prepare={"channels_last": True}),
    Option("int8", prepare={"quantize": "int8", "channels_last": False}),
    Option("int8 + NHWC", prepare={"quantize": "int8", "channels_last": True}),
    Option("int8 + NHWC + guidance to 5", {"guidance_scales": 5}, {"quantize": "int8", "channels_last": True}),
    Option("int8 + NHWC + guidance to 4", {"guidance_scales": 4}, {"quantize": "int8", "channels_last": True}),
    Option("compiled step", prepare={"compile": True, "channels_last": False}),
    Option("inverse-CDF draw", {"inverse_cdf": True}),
    Option("int8 + NHWC + inverse-CDF", {"inverse_cdf": True}, {"quantize": "int8", "channels_last": True}),
    Option(
        "int8 + NHWC + inverse-CDF + guidance to 5",
        {"inverse_cdf": True, "guidance_scales": 5},
        {"quantize": "int8", "channels_last": True},
    ),  # fmt: skip
    Option("refiner from scale 5", {"handover_scale": 5}, refiner=True),
    Option("refiner from scale 4", {"handover_scale": 4}, refiner=True),
    Option(
        "int8 + NHWC + refiner from scale 5",
        {"handover_scale": 5},
        {"quantize": "int8", "channels_last": True},
        refiner=True,
    ),  # fmt: skip
    Option(
        "int8 + NHWC + inverse-CDF + refiner from scale 5",
        {"inverse_cdf": True, "handover_scale": 5},
        {"quantize": "int8", "channels_last": True},
        refiner=True,
    ),  # fmt: skip
)


def summarized(data: dict) -> list[dict]:
    """Per option with scores: mean and sd of every quality figure over its seeds, its speed, and both relative to the
    exact path (the FID change on the sampling seeds the two share)."""
    order = {option.name: i for i, option in enumerate(OPTIONS)}
    rows = []
    for name, record in sorted(data["options"].items(), key=lambda item: order.get(item[0], len(order))):
        if not record["quality"]:
            continue
        row = {"name": name, "settings": record["settings"], "prepare": record["prepare"], "speed": record.get("speed"),
               "refiner": record.get("refiner")}  # fmt: skip
        row["seeds"] = len(record["quality"])
        for key in QUALITY_KEYS:
            values = np.array([q[key] for q in record["quality"]], dtype=float)
            row[key], row[key + "_sd"] = float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0
        rows.append(row)
    exact = next((r for r in rows if r["name"] == "exact"), None)
    for row in rows:
        if exact is None:
            continue
        # against the exact path on the same sampling seeds (an option may have fewer seeds than the exact path)
        exact_fid = {q["sample_seed"]: q["fid"] for q in data["options"]["exact"]["quality"]}
        pairs = [(q["fid"], exact_fid[q["sample_seed"]]) for q in data["options"][row["name"]]["quality"]
                 if q["sample_seed"] in exact_fid]  # fmt: skip
        mine, base = np.array(pairs, dtype=float).reshape(-1, 2).T
        row["fid_change"] = float(mine.mean() / base.mean() - 1) if pairs else math.nan
        changes = mine / base - 1
        row["fid_change_sd"] = float(changes.std(ddof=1)) if len(pairs) > 1 else 0.0
        if row["speed"] and exact["speed"]:
            mine, base = row["speed"], exact["speed"]
            row["speedup_batch100"] = mine["images_per_s_batch100"] / base["images_per_s_batch100"]
            row["speedup_batch1"] = base["latency_ms_batch1"] / mine["latency_ms_batch1"]
    return rows


def fastest_within_budget(rows: list[dict]) -> dict | None:
    """The option with the most images/s at batch 100 whose mean FID is within FID_BUDGET of the exact path's, among
    those of the model alone (a recipe is a change of one model's settings: options with a refiner are not chosen)."""
    allowed = [r for r in rows if "speedup_batch100" in r and r["fid_change"] <= FID_BUDGET and not r["refiner"]]
    return max(allowed, key=lambda r: r["speedup_batch100"], default=None)


def fast_recipe(data: dict) -> dict | None:
    """The model's "fast" record (nextscale.json): the fastest option within the FID budget, with what it measured."""
    best = fastest_within_budget(summarized(data))
    if best is None:
        return None
    return {"sampling": best["settings"], "quantize": best["prepare"].get("quantize"),
            "measured": {"option": best["name"], "speedup_batch100": round(best["speedup_batch100"], 3),
                         "speedup_batch1": round(best["speedup_batch1"], 3), "fid_change": round(best["fid_change"], 4),
                         "fid_budget": FID_BUDGET, "source": "docs/data/speed_quality.json"}}  # fmt: skip
