"""docs/ablation.md's tables and curves, generated from docs/data/ablation.json (no number is typed by hand).

    python docs/scripts/ablation_report.py --import runs/ablation/ablation.json   # copy a finished run's records in
    python docs/scripts/ablation_report.py            # rewrite the tables in docs/ablation.md, draw the curves
    python docs/scripts/ablation_report.py --check    # exit 1 when docs/ablation.md's tables differ from the data

The quality table, the cost table and the curve slopes sit in docs/ablation.md between marker comments
(`<!-- ablation:NAME -->` … `<!-- /ablation:NAME -->`); everything else in the document is prose.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from nextscale.experiments.ablation_config import CURVE_ROWS
from nextscale.experiments.ablation_report import (
    cost_table,
    crossover,
    curve_slopes,
    markdown_table,
    plot_curves,
    summarize,
)
from nextscale.marked_sections import check_document, replace_marked_sections

DOCS = Path(__file__).resolve().parents[1]
DATA = DOCS / "data" / "ablation.json"
DOCUMENT = DOCS / "ablation.md"
CURVES = DOCS / "ablation_curves.png"


def verdicts(data: dict) -> str:
    """Each step between rows against the paper's ordering (every step lowers FID)."""
    lines = []
    for row in summarize(data):
        if "fid_step" not in row:
            continue
        holds = {"gain": "holds", "loss": "does not hold", "within noise": "within noise"}[row["step_verdict"]]
        lines.append(f"- {row['row']}: FID {row['fid_step']:+.2f} (sd {row['fid_sd']:.2f}): {holds}")
    return "\n".join(lines) + "\n"


def slopes(data: dict) -> str:
    lines = ["| row | FID at the end | FID per doubling of images | test loss at the end | test loss per doubling |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, row in curve_slopes(data).items():
        lines.append(f"| {name} | {row['fid']:.2f} | {row['fid_per_doubling']:+.2f} | {row['test_loss']:.3f} | "
                     f"{row['test_loss_per_doubling']:+.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def crossovers(data: dict) -> str:
    """Where each VAR curve row overtakes AR: per training images and per training PFLOPs (AR interpolated)."""
    lines = []
    for name in CURVE_ROWS[1:]:
        for x_key, axis in (("train_images", "training images"), ("train_pflops", "training PFLOPs")):
            found = crossover(data, name, x_key)
            if found is None:
                continue
            number = (lambda x: f"{x:,.0f} images") if x_key == "train_images" else (lambda x: f"{x:.3f} PFLOPs")
            points = "; ".join(f"{number(x)} {fid:.2f} / {base:.2f}" for x, fid, base in found["compared"])
            if found["below_from"] is None:
                verdict = "never below AR"
            else:
                verdict = f"below AR from {number(found['below_from'])} on" + (
                    "" if found["stays_below"] else ", but not at every later point"
                )
            lines.append(f"- {name}, per {axis}: {verdict} (FID of the row / of AR: {points})")
    return "\n".join(lines) + "\n" if lines else ""


SECTIONS = {"table": markdown_table, "costs": cost_table, "verdicts": verdicts, "slopes": slopes,
            "crossovers": crossovers}  # fmt: skip


def render(document: str, data: dict) -> str:
    """`document` with every marked section replaced by what the data gives."""
    return replace_marked_sections(document, "ablation", {name: make(data) for name, make in SECTIONS.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the records (default: docs/data/ablation.json)")
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("--import", dest="source", type=Path, help="copy this ablation.json to --data first")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the document differs")
    parser.add_argument("--curves", type=Path, default=CURVES, help="where the curves figure goes")
    args = parser.parse_args(argv)
    if args.source is not None and not args.source.is_file():
        parser.exit(2, f"{args.source}: no such file to import (a run's ablation.json)\n")
    if args.source is not None:
        args.data.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.source, args.data)
    if not args.data.is_file():
        parser.exit(2, f"{args.data}: no such records file (run the ablation, then --import its ablation.json)\n")
    data = json.loads(args.data.read_text())
    document = args.document.read_text()
    rendered = render(document, data)
    if args.check:
        return check_document(args.document, rendered, args.data, Path(__file__).name)
    args.document.write_text(rendered)
    if data["curves"]:
        plot_curves(data, args.curves)
    print(f"{args.document} rewritten from {args.data}" + (f"; curves in {args.curves}" if data["curves"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
