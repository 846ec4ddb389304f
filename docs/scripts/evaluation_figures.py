"""The tables and the guidance curve of docs/evaluation.md from the `eval-samples --json` files of one folder:

fid10k.json, floor_train.json      10,000 samples (1,000 per class) and the train-against-test floor
cfg<g>.json                        one sample set per guidance scale g (the trade-off curve)
re<M>.json, prune<r>.json          rejection sampling with M candidates; token pruning with ratio r

python docs/scripts/evaluation_figures.py runs/eval --plot docs/evaluation_cfg_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(name: str, result: dict) -> str:
    accuracy = "—" if result["class_accuracy"] is None else f"{100 * result['class_accuracy']:.1f}%"
    return (
        f"| {name} | {result['fid']:.3f} | {result['inception_score']:.2f} | {1000 * result['kid']:.2f} "
        f"| {result['precision']:.3f} | {result['recall']:.3f} | {accuracy} | {result['num_samples']:,} "
        f"| {result['feature_images_per_second']:,.0f} |"
    )


def numbered(folder: Path, prefix: str) -> list[tuple[float, dict]]:
    """(number after the prefix, result) of every `<prefix><number>.json`, sorted by the number."""
    found = []
    for file in folder.glob(f"{prefix}*.json"):
        try:
            found.append((float(file.stem[len(prefix) :]), json.loads(file.read_text())))
        except ValueError:
            continue
    return sorted(found, key=lambda item: item[0])


def plot(curve: list[tuple[float, dict]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(figure)
    fid_axes = figure.add_subplot()
    is_axes = fid_axes.twinx()
    guidance = [g for g, _ in curve]
    fid_axes.plot(guidance, [r["fid"] for _, r in curve], "o-", color="tab:blue", label="FID")
    is_axes.plot(guidance, [r["inception_score"] for _, r in curve], "s--", color="tab:orange", label="IS")
    fid_axes.set_xlabel("guidance scale cfg (at the last scale)")
    fid_axes.set_ylabel("FID (classifier features), lower is better", color="tab:blue")
    is_axes.set_ylabel("IS (classifier logits), higher is better", color="tab:orange")
    fid_axes.set_title("Guidance trade-off, shipped Fashion-MNIST model")
    fid_axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--plot", type=Path, help="where to draw FID and IS against cfg")
    args = parser.parse_args()
    header = "| set | FID | IS | KID ×10³ | precision | recall | class acc. | images | features images/s |"
    rule = "|---|---|---|---|---|---|---|---|---|"

    print(header, rule, sep="\n")
    for name, file in (("samples, cfg 1.5", "fid10k.json"), ("train images (floor)", "floor_train.json")):
        if (args.folder / file).is_file():
            print(row(name, json.loads((args.folder / file).read_text())))
    curve = numbered(args.folder, "cfg")
    print("", header, rule, sep="\n")
    for guidance, result in curve:
        print(row(f"cfg {guidance:g}", result))
    for prefix, label in (("re", "rejection, best of {:g}"), ("prune", "pruning ratio {:g}")):
        for number, result in numbered(args.folder, prefix):
            print(row(label.format(number), result))
    if args.plot and curve:
        plot(curve, args.plot)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
