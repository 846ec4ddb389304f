"""docs/evaluation.md's tables and guidance plot from the JSON files of docs/data/evaluation/<model>/ (written by
docs/scripts/fmnist_model_eval.py; each one an `nextscale eval-samples --json` record plus the settings and seed).

    python docs/scripts/evaluation_figures.py                 # rewrite the marked tables, draw the plot
    python docs/scripts/evaluation_figures.py --check         # exit 1 when the document differs from the data

Sections between `<!-- evaluation:NAME -->` markers: floor (the training images and the tokenizer's reconstructions
scored like samples), model (the chosen preset: 2,000 samples at three seeds, mean ± sd, and 10,000 samples, with
issue 19's targets) and sweep (every setting tried).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nextscale.marked_sections import check_document, replace_marked_sections

DOCS = Path(__file__).resolve().parents[1]
DATA = DOCS / "data" / "evaluation" / "fmnist"
DOCUMENT = DOCS / "evaluation.md"
PLOT = DOCS / "evaluation_cfg_curve.png"
TARGETS = {"fid": ("≤", 3.5), "class_accuracy": ("≥", 0.88), "recall": ("≥", 0.35)}
HEADER = "| set | FID | IS | KID ×10³ | precision | recall | class acc. | images |\n|---|---|---|---|---|---|---|---|"


def load(folder: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def settings_name(settings: dict) -> str:
    return f"cfg {settings['cfg']:g}, top-k {settings['top_k']}, top-p {settings['top_p']:g}"


def row(name: str, r: dict) -> str:
    accuracy = "—" if r["class_accuracy"] is None else f"{100 * r['class_accuracy']:.1f} %"
    return (
        f"| {name} | {r['fid']:.3f} | {r['inception_score']:.2f} | {1000 * r['kid']:.2f} | {r['precision']:.3f} | "
        f"{r['recall']:.3f} | {accuracy} | {r['num_samples']:,} |"
    )


def floor(sets: dict[str, dict]) -> str:
    lines = [HEADER.replace("| images |", "| images | PSNR |") + "---|"]
    floors = {"floor_train": "60,000 training images (the data's floor)",
              "floor_reconstruction": "10,000 test images through the tokenizer (the tokenizer's floor)"}  # fmt: skip
    for key, name in floors.items():
        if key in sets:
            psnr = sets[key].get("reconstruction_psnr")
            lines.append(row(name, sets[key]) + (f" {psnr:.2f} dB |" if psnr is not None else " — |"))
    return "\n".join(lines) + "\n"


def _mean_sd(values: list[float]) -> str:
    array = np.asarray(values, dtype=np.float64)
    return f"{array.mean():.3f} ± {array.std(ddof=1):.3f}" if array.size > 1 else f"{array.mean():.3f}"


def model(sets: dict[str, dict]) -> str:
    seeds = [sets[k] for k in sorted(sets) if k.startswith("preset-seed")]
    if not seeds:
        return ""
    lines = [f"Preset: {settings_name(seeds[0]['settings'])}.", "", HEADER]
    for r in seeds:
        lines.append(row(f"2,000 samples, seed {r['sample_seed']}", r))
    keys = ("fid", "inception_score", "kid", "precision", "recall", "class_accuracy")
    mean = {k: _mean_sd([r[k] * (1000 if k == "kid" else 100 if k == "class_accuracy" else 1) for r in seeds])
            for k in keys}  # fmt: skip
    lines.append(
        f"| 2,000 samples, mean ± sd over {len(seeds)} seeds | {mean['fid']} | {mean['inception_score']} | "
        f"{mean['kid']} | {mean['precision']} | {mean['recall']} | {mean['class_accuracy']} % | 2,000 |"
    )
    if "preset-10k" in sets:
        lines.append(row("10,000 samples (1,000 per class), seed 0", sets["preset-10k"]))
    for key in sorted(k for k in sets if k.endswith("-seed0") and not k.startswith("preset-")):
        lines.append(row(f"2,000 samples, seed 0, the {key.removesuffix('-seed0')} weights", sets[key]))
    lines += ["", "| target (issue 19, mean over the seeds) | wanted | measured | met |", "|---|---|---|---|"]
    for key, (sign, goal) in TARGETS.items():
        value = float(np.mean([r[key] for r in seeds]))
        met = value <= goal if sign == "≤" else value >= goal
        lines.append(f"| {key} | {sign} {goal:g} | {value:.3f} | {'yes' if met else 'no'} |")
    seconds = sets.get("preset", {}).get("grid_seconds_best_of_3")
    if seconds is not None:
        lines.append(
            f"| 80-image grid, start-up included (s) | < 15 | {seconds:.1f} | {'yes' if seconds < 15 else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def sweep(sets: dict[str, dict]) -> str:
    lines = [HEADER]
    for key in sorted((k for k in sets if k.startswith("sweep-")), key=lambda k: tuple(sets[k]["settings"].values())):
        lines.append(row(settings_name(sets[key]["settings"]), sets[key]))
    return "\n".join(lines) + "\n"


def plot(sets: dict[str, dict], path: Path) -> None:
    """FID and recall against cfg, one line per (top-k, top-p) of the sweep."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.8))
    FigureCanvasAgg(figure)
    fid_axes, recall_axes = figure.subplots(1, 2)
    sweeps = [sets[k] for k in sets if k.startswith("sweep-")]
    for filtering in sorted({(r["settings"]["top_k"], r["settings"]["top_p"]) for r in sweeps}):
        chosen = [r for r in sweeps if (r["settings"]["top_k"], r["settings"]["top_p"]) == filtering]
        points = sorted(((r["settings"]["cfg"], r) for r in chosen), key=lambda point: point[0])
        label = f"top-k {filtering[0]}, top-p {filtering[1]:g}"
        fid_axes.plot([c for c, _ in points], [r["fid"] for _, r in points], "o-", label=label)
        recall_axes.plot([c for c, _ in points], [r["recall"] for _, r in points], "o-", label=label)
    for axes, name in ((fid_axes, "FID (classifier features), lower is better"), (recall_axes, "recall")):
        axes.set_xlabel("guidance scale cfg (at the last scale)")
        axes.set_ylabel(name)
        axes.grid(True, alpha=0.3)
    fid_axes.legend(fontsize=8)
    figure.suptitle("Sampling settings of the shipped model, 2,000 samples each")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


SECTIONS = {"floor": floor, "model": model, "sweep": sweep}


def render(document: str, sets: dict[str, dict]) -> str:
    return replace_marked_sections(document, "evaluation", {name: make(sets) for name, make in SECTIONS.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the document differs")
    args = parser.parse_args(argv)
    sets = load(args.data)
    document = args.document.read_text()
    rendered = render(document, sets)
    if args.check:
        return check_document(args.document, rendered, args.data, Path(__file__).name)
    args.document.write_text(rendered)
    plot(sets, args.plot)
    print(f"{args.document} rewritten from {args.data}; plot in {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
