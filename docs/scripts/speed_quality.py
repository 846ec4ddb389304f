"""The speed–quality frontier of the training-free accelerations on a model (docs/performance.md, issue 20).

    python docs/scripts/speed_quality.py quality [--model fmnist] [--seeds 0,1,2]   # sample sets and their scores
    python docs/scripts/speed_quality.py speed [--repeats 5]     # interleaved timings: run it on an idle machine
    python docs/scripts/speed_quality.py report [--check] [--record-fast nextscale/assets/fmnist]   # table, figure

Every option is a change to the model's own sampling settings (its recorded preset: the exact path) or to how the
models are prepared (`nextscale.inference.prepare_for_inference`). `quality` draws a class-balanced set of 2,000
samples per option and sampling seed and scores it against the 10,000 test images (FID, IS, precision, recall, class
accuracy with the shipped classifier's features); `speed` times every option against the exact path in interleaved
rounds (latency of one image at batch 1, images/s at batch 100, decode included; best round of `--repeats`) and the
decoder alone; both write into docs/data/speed_quality.json, which `report` turns into the table between the
`<!-- speed:frontier -->` markers of docs/performance.md and docs/speed_quality.png (FID against images/s).
With `--record-fast DIR`, `report` also writes the fastest option within +10 % FID of the exact path into the model
directory's nextscale.json as its "fast" recipe, which `--fast` and `Pipeline.from_pretrained(fast=True)` apply.
Sample sets are kept under --work, so a rerun only computes what is missing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
DATA = DOCS / "data" / "speed_quality.json"
DOCUMENT = DOCS / "performance.md"
FIGURE = DOCS / "speed_quality.png"
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


def active_options(args) -> tuple[Option, ...]:
    """The options this run can measure: those with a refiner only when --refiner names one."""
    return tuple(option for option in OPTIONS if args.refiner or not option.refiner)


def refiner_label(refiner: str | None) -> str | None:
    """How the data names a refiner: its folder's name and parameter count (paths differ between machines)."""
    if refiner is None:
        return None
    from nextscale.pretrained import load_refiner

    transformer = load_refiner(refiner)
    return f"{Path(refiner).name} ({sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M parameters)"


def load_pipeline(model: str, option: Option, refiner: str | None = None):
    from nextscale.inference import prepare_for_inference, prepare_transformer
    from nextscale.pipeline import Pipeline
    from nextscale.pretrained import load_refiner

    second = load_refiner(refiner) if option.refiner else None
    pipe = Pipeline.from_pretrained(model, refiner=second)
    pipe.settings = replace(pipe.settings, **option.settings)
    if option.prepare:
        prepare_for_inference(pipe.tokenizer, pipe.model, **option.prepare)
        if second is not None:
            prepare_transformer(
                second, quantize=option.prepare.get("quantize"), compile=bool(option.prepare.get("compile"))
            )
    return pipe


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"options": {}}


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(path)


def entry(data: dict, option: Option, refiner: str | None = None) -> dict:
    record = data["options"].setdefault(option.name, {})
    record.update(settings=option.settings, prepare=option.prepare)
    if option.refiner and record.setdefault("refiner", refiner) != refiner:  # one refiner per option's seeds, timings
        raise SystemExit(f"{option.name}: recorded with the refiner {record['refiner']}, not {refiner}")
    record.setdefault("quality", [])
    return record


def measure_quality(args, data: dict) -> None:
    from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples
    from nextscale.eval.sample_set import class_balanced_npz

    for seed in args.seeds:  # every option's first seed before any option's second: a cut run stays balanced
        for option in active_options(args):
            record = entry(data, option, args.refiner_label)
            if any(q["sample_seed"] == seed for q in record["quality"]):
                continue
            pipe = load_pipeline(args.model, option, args.refiner)
            path = args.work / f"{option.name.replace(' ', '_').replace('%', 'pc')}-seed{seed}.npz"
            class_balanced_npz(pipe, pipe.settings, 200, 100, seed, path, description=f"{option.name} seed {seed}")
            scores = evaluate_samples(EvaluationConfig(samples=str(path), reference="fashion-mnist:test"), False)
            record["quality"].append({"sample_seed": seed, **{k: scores[k] for k in QUALITY_KEYS}})
            record["sampling"] = asdict(pipe.settings)
            write(args.data, data)
            print(f"{option.name} seed {seed}: FID {scores['fid']:.3f}", flush=True)


def measure_speed(args, data: dict) -> None:
    import torch

    from nextscale.timing import interleaved_times, time_interleaved

    options = active_options(args)
    pipes = {option.name: load_pipeline(args.model, option, args.refiner) for option in options}
    labels = [i % 10 for i in range(args.batch)]
    samplers = {name: (lambda n, pipe=pipe: pipe.generate(labels[:n], seed=0)) for name, pipe in pipes.items()}
    with torch.inference_mode():
        timings = time_interleaved(samplers, args.batch, args.repeats, latency_images=args.latency_images)
        timings.pop("_order")
        exact = pipes["exact"]
        side = exact.model.schedule.final_side
        f_hat = torch.randn(args.batch, exact.tokenizer.token_space.latent_channels, side, side)
        nhwc = pipes["NHWC decoder"].tokenizer
        decoders = {"NCHW": lambda: exact.tokenizer.decode_fhat(f_hat), "NHWC": lambda: nhwc.decode_fhat(f_hat)}
        decode_seconds = {layout: min(t) for layout, t in interleaved_times(decoders, args.repeats).items()}
        data["draw_seconds"] = {"batch1": time_draws(exact, 1, args.repeats),
                                "batch100": time_draws(exact, args.batch, args.repeats)}  # fmt: skip
    for option in options:
        entry(data, option, args.refiner_label)["speed"] = timings[option.name]
    data["decoder_seconds_batch100"] = decode_seconds["NCHW"]
    data["decoder_nhwc_seconds_batch100"] = decode_seconds["NHWC"]
    data["machine"] = {"processor": platform.processor() or platform.machine(), "cpu": _cpu_name(),
                       "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip
    write(args.data, data)
    for option in options:
        t = timings[option.name]
        print(f"{option.name:32s} {t['images_per_s_batch100']:7.1f} images/s  {t['latency_ms_batch1']:7.1f} ms")


def time_draws(pipe, batch: int, repeats: int) -> dict[str, float]:
    """Seconds of the token draws alone for one batch (every scale, the pipeline's top-k / top-p, logits of the model's
    vocabulary drawn at random once): the official multinomial against the inverse-CDF draw, interleaved, best
    round."""
    import torch

    from nextscale.sampling import sample_inverse_cdf, sample_top_k_top_p
    from nextscale.timing import interleaved_times

    settings, vocabulary = pipe.settings, pipe.tokenizer.token_space.vocab_size
    generator = torch.Generator().manual_seed(0)
    logits = [
        torch.randn(batch, side * side, vocabulary, generator=generator) * 3 for side in pipe.model.schedule.patch_nums
    ]

    def draw(sampler):
        return lambda: [sampler(x.clone(), settings.top_k, settings.top_p, generator) for x in logits]

    draws = {"multinomial": draw(sample_top_k_top_p), "inverse_cdf": draw(sample_inverse_cdf)}
    return {name: min(times) for name, times in interleaved_times(draws, repeats).items()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


# ---- the report ---------------------------------------------------------------------------------------------------


def summarized(data: dict) -> list[dict]:
    """Per option with scores: mean and sd of every quality figure, its speed and both relative to the exact path."""
    import numpy as np

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
        row["fid_change"] = row["fid"] / exact["fid"] - 1
        exact_fid = {q["sample_seed"]: q["fid"] for q in data["options"]["exact"]["quality"]}
        paired = [q["fid"] / exact_fid[q["sample_seed"]] - 1 for q in data["options"][row["name"]]["quality"]
                  if q["sample_seed"] in exact_fid]  # fmt: skip
        row["fid_change_sd"] = float(np.std(paired, ddof=1)) if len(paired) > 1 else 0.0
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


def table(data: dict) -> str:
    rows = summarized(data)
    lines = ["| option | images/s, batch 100 | × exact | ms / image, batch 1 | × exact | FID (mean ± sd) | "
             "FID vs exact (± sd of the per-seed change) | class acc. | recall | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        speed = r["speed"]
        timing = "— | — | — | —"
        if speed:
            timing = (f"{speed['images_per_s_batch100']:.1f} | {r.get('speedup_batch100', 1):.2f}× | "
                      f"{speed['latency_ms_batch1']:.1f} | {r.get('speedup_batch1', 1):.2f}×")  # fmt: skip
        lines.append(f"| {r['name']} | {timing} | {r['fid']:.2f} ± {r['fid_sd']:.2f} | "
                     f"{100 * r.get('fid_change', 0):+.1f} ± {100 * r.get('fid_change_sd', 0):.1f} % | "
                     f"{100 * r['class_accuracy']:.1f} % | {r['recall']:.3f} | {r['seeds']} |")  # fmt: skip
    refiners = sorted({r["refiner"] for r in rows if r["refiner"]})
    if refiners:
        lines.append("")
        lines.append(f"Refiner of the collaborative-decoding rows: {', '.join(refiners)} (the model drafts the scales "
                     f"before the handover, the refiner draws the rest).")  # fmt: skip
    best = fastest_within_budget(rows)
    exact = next((r for r in rows if r["name"] == "exact" and r["speed"]), None)
    if best is not None and exact is not None and "decoder_nhwc_seconds_batch100" in data:
        lines.append("")
        lines.append(time_split(data, exact, best))
    if exact is not None and "draw_seconds" in data:
        lines.append("")
        lines.append(draw_split(data, exact))
    if best is not None:
        lines.append("")
        lines.append(f"Fastest option of the model alone within +{100 * FID_BUDGET:.0f} % FID of the exact path: "
                     f"**{best['name']}** "
                     f"({best['speedup_batch100']:.2f}× at batch 100, {best['speedup_batch1']:.2f}× at batch 1, "
                     f"FID {100 * best['fid_change']:+.1f} ± {100 * best['fid_change_sd']:.1f} %).")  # fmt: skip
        if best["fid_change"] + best["fid_change_sd"] > FID_BUDGET:
            lines.append(f"It is within the budget by its mean only: one sd of its per-seed FID change reaches past "
                         f"+{100 * FID_BUDGET:.0f} %, so with {best['seeds']} seeds it is at the edge of the budget, "
                         f"not safely inside it.")  # fmt: skip
    return "\n".join(lines) + "\n"


def time_split(data: dict, exact: dict, best: dict) -> str:
    """Where a batch of 100 spends its time on the exact path and on the fastest option: the decoder alone (timed
    separately, in the option's layout) and the rest (the transformer, the sampler and the f̂ updates)."""

    def split(row: dict) -> tuple[float, float]:
        total = 100 / row["speed"]["images_per_s_batch100"]
        decoder = data[
            "decoder_nhwc_seconds_batch100" if row["prepare"].get("channels_last") else "decoder_seconds_batch100"
        ]
        return total - decoder, decoder

    (rest0, decoder0), (rest1, decoder1) = split(exact), split(best)
    return (f"Batch of 100, exact path → {best['name']}: transformer and sampler {rest0:.2f} s → {rest1:.2f} s "
            f"({rest0 / rest1:.2f}×), decoder {decoder0:.2f} s → {decoder1:.2f} s "
            f"({decoder0 / decoder1:.2f}×).")  # fmt: skip


def draw_split(data: dict, exact: dict) -> str:
    """What the token draw alone costs, per batch of 100 and per image at batch 1, against the exact path's time."""
    parts = []
    for key, total, unit, scale in (("batch100", 100 / exact["speed"]["images_per_s_batch100"], "s", 1),
                                    ("batch1", exact["speed"]["latency_ms_batch1"] / 1000, "ms", 1000)):  # fmt: skip
        multinomial, inverse = data["draw_seconds"][key]["multinomial"], data["draw_seconds"][key]["inverse_cdf"]
        parts.append(f"{'a batch of 100' if key == 'batch100' else 'one image at batch 1'}: multinomial "
                     f"{scale * multinomial:.3g} {unit} ({100 * multinomial / total:.0f} % of the exact path's time), "
                     f"inverse-CDF {scale * inverse:.3g} {unit} ({multinomial / inverse:.1f}× less)")  # fmt: skip
    return "The token draw alone (every scale, the preset's top-k, random logits), " + "; ".join(parts) + "."


def plot(data: dict, path: Path) -> Path:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in summarized(data) if r["speed"]]
    figure = Figure(figsize=(13, 4.6))
    FigureCanvasAgg(figure)
    colors = matplotlib.colormaps["tab20"]
    axes = figure.subplots(1, 2)
    for ax, key, label in zip(axes, ("images_per_s_batch100", "latency_ms_batch1"),
                              ("images/s at batch 100", "images/s at batch 1 (1000 / latency in ms)")):  # fmt: skip
        for i, r in enumerate(rows):
            speed = r["speed"][key] if key.startswith("images") else 1000 / r["speed"][key]
            exact = r["name"] == "exact"
            ax.errorbar(speed, r["fid"], yerr=r["fid_sd"], fmt="*" if exact else "o", ms=13 if exact else 7,
                        color="black" if exact else colors(i % 20), capsize=3, label=r["name"])  # fmt: skip
        budget = next(r["fid"] for r in rows if r["name"] == "exact") * (1 + FID_BUDGET)
        ax.axhline(budget, color="tab:red", linestyle="--", linewidth=1, label=f"exact +{100 * FID_BUDGET:.0f} % FID")
        ax.set_xlabel(label)
        ax.set_ylabel("FID (2,000 samples; mean ± sd over seeds)")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 0.8, 1))
    figure.savefig(path, dpi=110)
    return path


def fast_recipe(data: dict) -> dict | None:
    """The model's "fast" record (nextscale.json): the fastest option within the FID budget, with what it measured."""
    best = fastest_within_budget(summarized(data))
    if best is None:
        return None
    return {"sampling": best["settings"], "quantize": best["prepare"].get("quantize"),
            "measured": {"option": best["name"], "speedup_batch100": round(best["speedup_batch100"], 3),
                         "speedup_batch1": round(best["speedup_batch1"], 3), "fid_change": round(best["fid_change"], 4),
                         "fid_budget": FID_BUDGET, "source": "docs/data/speed_quality.json"}}  # fmt: skip


def report(args, data: dict) -> int:
    from nextscale.marked_sections import replace_marked_sections

    document = args.document.read_text()
    rendered = replace_marked_sections(document, "speed", {"frontier": table(data)})
    meta_file = Path(args.record_fast) / "nextscale.json" if args.record_fast else None
    meta = json.loads(meta_file.read_text()) if meta_file else {}
    recipe = fast_recipe(data)
    if args.check:
        stale = [str(args.document)] if rendered != document else []
        if meta_file is not None and meta.get("fast") != recipe:
            stale.append(f'{meta_file} (its "fast" record)')
        for path in stale:
            print(f"{path} is not what {args.data} gives: run {Path(__file__).name} report", file=sys.stderr)
        return 1 if stale else 0
    args.document.write_text(rendered)
    if meta_file is not None and recipe is not None:
        meta_file.write_text(json.dumps({**meta, "fast": recipe}, indent=2) + "\n")
    if any(r["speed"] for r in summarized(data)):
        plot(data, args.figure)
    print(f"{args.document} rewritten from {args.data}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("quality", "speed", "report"))
    parser.add_argument("--model", default="fmnist", help="a model name or directory (default: the shipped fmnist)")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds of the quality sets")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (the best is kept)")
    parser.add_argument("--batch", type=int, default=100, help="throughput batch")
    parser.add_argument("--latency-images", type=int, default=10, help="batch-1 calls averaged per round")
    parser.add_argument("--work", type=Path, default=Path("runs/speed_quality"), help="sample sets (kept)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--check", action="store_true", help="report: exit 1 when the document differs")
    parser.add_argument("--refiner", help="quality/speed: a model directory on the same tokenizer for the "
                        "collaborative-decoding options (left out: those options are skipped)")  # fmt: skip
    parser.add_argument(
        "--record-fast", help="report: write the fast recipe into this model directory's nextscale.json"
    )
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.refiner_label = refiner_label(args.refiner) if args.phase != "report" else None
    data = read(args.data)
    if args.phase == "quality":
        measure_quality(args, data)
    elif args.phase == "speed":
        measure_speed(args, data)
    return report(args, read(args.data)) if args.phase == "report" else 0


if __name__ == "__main__":
    sys.exit(main())
