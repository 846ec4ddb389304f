"""The ablation's tables and curves from its records (ablation.json): mean ± sd over seeds, the step from each row to
the next judged against the seed spread, the inference costs relative to AR, and the training curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nextscale.experiments.ablation_config import CURVE_ROWS, PAPER, ROWS

MODEL_FACTS = ("parameters", "train_images", "train_pflops")
QUALITY_KEYS = ("fid", "inception_score", "precision", "recall", "class_accuracy")


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def summarize(data: dict) -> list[dict]:
    """Per row: mean and sd of every quality figure over all (training seed, sampling seed) records, the model's
    facts, and the step from the row above: 'gain' or 'loss' when the FID moves by more than the larger of the two
    rows' spreads, else 'within noise'."""
    rows = []
    for row in ROWS:
        records = [r for r in data["records"] if r["row"] == row.name]
        if not records:
            continue
        summary = {"row": row.name, "model": row.model, "records": len(records),
                   "train_seeds": sorted({r["train_seed"] for r in records}),
                   "sample_seeds": sorted({r["sample_seed"] for r in records}),
                   **{k: data["models"].get(row.model, {}).get(k) for k in MODEL_FACTS},
                   "paper_fid": PAPER[row.name][0]}  # fmt: skip
        for key in (*QUALITY_KEYS, "test_loss"):
            summary[key], summary[key + "_sd"] = mean_sd([r[key] for r in records])
        if rows:
            above = rows[-1]
            delta, spread = summary["fid"] - above["fid"], max(summary["fid_sd"], above["fid_sd"])
            summary["fid_step"] = delta
            summary["step_verdict"] = "within noise" if abs(delta) <= spread else ("gain" if delta < 0 else "loss")
        rows.append(summary)
    return rows


def _pm(mean: float, sd: float, digits: int, scale: float = 1.0, unit: str = "") -> str:
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}{unit}"


def markdown_table(data: dict) -> str:
    """The quality table: mean ± sd over training and sampling seeds, with the step verdicts and the paper's FID."""
    lines = [
        "| row | parameters | train images | train PFLOPs | seeds (train × sample) | FID | step | IS | class acc. | "
        "precision | recall | test loss | paper FID |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    floors = data.get("tokenizers", {})
    for name, uses in (("one-scale", "AR"), ("multi-scale", "VAR")):
        if name in floors:
            f = floors[name]
            lines.append(
                f"| floor: {name} tokenizer ({uses} rows), test images reconstructed | — | — | — | — | "
                f"{f['fid']:.2f} | — | {f['inception_score']:.2f} | {100 * f['class_accuracy']:.1f} % | "
                f"{f['precision']:.3f} | {f['recall']:.3f} | PSNR {f['psnr']:.2f} dB | — |"
            )
    for r in summarize(data):
        step = "—" if "fid_step" not in r else f"{r['fid_step']:+.2f} ({r['step_verdict']})"
        lines.append(
            f"| {r['row']} | {r['parameters'] / 1e6:.2f}M | {r['train_images']:,} | {r['train_pflops']:.3f} | "
            f"{len(r['train_seeds'])} × {len(r['sample_seeds'])} | {_pm(r['fid'], r['fid_sd'], 2)} | {step} | "
            f"{_pm(r['inception_score'], r['inception_score_sd'], 2)} | "
            f"{_pm(r['class_accuracy'], r['class_accuracy_sd'], 1, 100, ' %')} | "
            f"{_pm(r['precision'], r['precision_sd'], 3)} | {_pm(r['recall'], r['recall_sd'], 3)} | "
            f"{_pm(r['test_loss'], r['test_loss_sd'], 3)} | {r['paper_fid']} |"
        )
    return "\n".join(lines) + "\n"


def cost_table(data: dict) -> str:
    """Inference cost per row: FLOPs per image, latency at batch 1 and throughput at batch 100, relative to AR."""
    costs = data["costs"]
    if "AR" not in costs:
        return ""
    base = costs["AR"]
    lines = [
        "| row | sampling GFLOPs / image | latency, batch 1 (ms / image) | latency rel. to AR | images/s, batch 100 "
        "| time rel. to AR, batch 100 | paper rel. cost (latency) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        if row.name not in costs:
            continue
        c = costs[row.name]
        paper = PAPER[row.name][1]
        lines.append(
            f"| {row.name} | {c['sampling_flops_per_image'] / 1e9:.3f} | {c['latency_ms_batch1']:.1f} | "
            f"{c['latency_ms_batch1'] / base['latency_ms_batch1']:.3f} | {c['images_per_s_batch100']:.1f} | "
            f"{base['images_per_s_batch100'] / c['images_per_s_batch100']:.3f} | {'—' if paper is None else paper} |"
        )
    return "\n".join(lines) + "\n"


def curve_slopes(data: dict, points: int = 3) -> dict[str, dict[str, float]]:
    """Per curve row, averaged over training seeds: FID and test loss at the last point and their least-squares
    slopes per doubling of training images over the last `points` points (one 2,000-sample FID moves by about 0.2
    between sampling seeds, so a slope from two points 1.25× apart would amplify that noise fourfold)."""
    import numpy as np

    slopes = {}
    for name in CURVE_ROWS:
        curve = [c for c in data["curves"] if c["row"] == name]
        images = sorted({c["train_images"] for c in curve})[-points:]
        if len(images) < 2:
            continue
        row = {}
        for key in ("fid", "test_loss"):
            means = [mean_sd([c[key] for c in curve if c["train_images"] == n])[0] for n in images]
            row[key], row[key + "_per_doubling"] = means[-1], float(np.polyfit(np.log2(images), means, 1)[0])
        slopes[name] = row
    return slopes


def mean_curve(data: dict, row: str, x_key: str, y_key: str = "fid") -> list[tuple[float, float]]:
    """A curve row's (x, mean over training seeds of y) points, x ascending (x_key: train_images or train_pflops)."""
    points = [c for c in data["curves"] if c["row"] == row]
    xs = sorted({c[x_key] for c in points})
    return [(x, mean_sd([c[y_key] for c in points if c[x_key] == x])[0]) for x in xs]


def crossover(data: dict, row: str, x_key: str, baseline: str = "AR") -> dict | None:
    """Where a curve row's mean FID goes below the baseline's at the same training images or PFLOPs (`x_key`).

    The baseline's mean curve is interpolated linearly in log x; the row's points outside the baseline's range are
    not compared. Returns the compared points [(x, fid, baseline fid)], the first x at which the row is below the
    baseline ("below_from", None if never) and whether it stays below at every later compared point."""
    import numpy as np

    base = mean_curve(data, baseline, x_key)
    if len(base) < 2:
        return None
    base_x, base_fid = np.log([x for x, _ in base]), [f for _, f in base]
    compared = [(x, fid, float(np.interp(np.log(x), base_x, base_fid)))
                for x, fid in mean_curve(data, row, x_key) if base[0][0] <= x <= base[-1][0]]  # fmt: skip
    if not compared:
        return None
    below = [fid < base_fid for _, fid, base_fid in compared]
    first = below.index(True) if any(below) else None
    return {"compared": compared, "below_from": None if first is None else compared[first][0],
            "stays_below": first is not None and all(below[first:])}  # fmt: skip


def plot_curves(data: dict, path: Path) -> Path:
    """FID against training images and against training PFLOPs, and test loss against images, for the curve rows:
    a thin line per training seed, a thick one for their mean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional: the scaling extra
    from matplotlib.figure import Figure  # optional: the scaling extra

    figure = Figure(figsize=(13, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    colours = dict(zip(CURVE_ROWS, ("tab:red", "tab:orange", "tab:blue")))
    for name in CURVE_ROWS:
        points = [c for c in data["curves"] if c["row"] == name]
        for x_key, y_key, ax in (("train_images", "fid", axes[0]), ("train_pflops", "fid", axes[1]),
                                 ("train_images", "test_loss", axes[2])):  # fmt: skip
            for seed in sorted({c["train_seed"] for c in points}):
                run = sorted((c for c in points if c["train_seed"] == seed), key=lambda c: c[x_key])
                ax.plot([c[x_key] for c in run], [c[y_key] for c in run], color=colours[name], alpha=0.35, lw=1)
            xs, means = zip(*mean_curve(data, name, x_key, y_key))
            ax.plot(xs, means, color=colours[name], lw=2.2, marker="o", label=name)
    for ax, x_label, y_label in ((axes[0], "training images", "FID (2,000 samples)"),
                                 (axes[1], "training PFLOPs", "FID (2,000 samples)"),
                                 (axes[2], "training images", "test loss (nats / token)")):  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    axes[2].set_title("test loss: 64 AR tokens vs 130 VAR tokens\n(not comparable across the two)", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
