"""The two tables of docs/scaling.md from a sweep folder: the runs, and the fitted laws next to the paper's.

python docs/scripts/scaling_tables.py runs/scaling
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Tian et al. 2024, Fig. 5 (N in billions) and Fig. 6 (C_min in PFLOPs): (beta, alpha, Pearson r)
PAPER_LAWS = {
    "against_parameters": {
        "L_last": (2.0, -0.23, -0.998),
        "L_avg": (2.5, -0.20, -0.998),
        "Err_last": (4.9e2, -0.016, -0.998),
        "Err_avg": (6.5e2, -0.010, -0.998),
    },
    "against_compute": {
        "L_last": (2.2e-5, -0.13, -0.99),
        "L_avg": (1.5e-5, -0.16, -0.99),
        "Err_last": (8.1e-2, -0.0067, -0.99),
        "Err_avg": (4.4e-2, -0.011, -0.99),
    },
}


def law(beta: float, alpha: float, variable: str) -> str:
    return f"({beta:.3g}·{variable})^{alpha:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    args = parser.parse_args()
    runs = json.loads((args.sweep / "runs.json").read_text())
    fits = json.loads((args.sweep / "fits.json").read_text())

    print("| run | width | heads | N | images | tokens | PFLOPs | L_last | L_avg | Err_last | Err_avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        final = run["final"]
        print(
            f"| {run['name']} | {run['width']} | {run['heads']} | {run['parameters'] / 1e6:.2f}M | {run['images']:,} "
            f"| {run['tokens'] / 1e6:.2f}M | {run['pflops']:.4f} | {final['L_last']:.3f} | {final['L_avg']:.3f} "
            f"| {final['Err_last']:.4f} | {final['Err_avg']:.4f} |"
        )
    print()
    print("| metric | against | nextscale, Fashion-MNIST 32 px | r | points | paper, ImageNet 256 px | r |")
    print("|---|---|---|---|---|---|---|")
    for group, variable in (("against_parameters", "N"), ("against_compute", "C_min")):
        for metric, fit in fits[group].items():
            beta, alpha, r = PAPER_LAWS[group][metric]
            print(
                f"| {metric} | {variable} | {law(fit['beta'], fit['alpha'], variable)} | {fit['pearson_r']:.4f} "
                f"| {fit['points']} | {law(beta, alpha, variable)} | {r} |"
            )


if __name__ == "__main__":
    main()
