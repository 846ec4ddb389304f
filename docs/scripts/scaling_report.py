"""docs/scaling.md's tables and figures, generated from docs/data/scaling/runs.json (no number is typed by hand).

    python docs/scripts/scaling_report.py --import runs/scaling     # add a finished sweep's runs.json to the data
    python docs/scripts/scaling_report.py                           # fits.json, the tables and the figures
    python docs/scripts/scaling_report.py --check                   # exit 1 when docs/scaling.md or fits.json differ

runs.json holds every run of every sweep (depth, seed, token budget, N, every evaluation point); the script fits each
token budget's runs with `nextscale.scaling.scaling_fits` (L_last, L_avg, Err_last, Err_avg against N and against
C_min; α's 90 % bootstrap interval, the log residuals and the fit with an irreducible floor) into fits.json, writes
the tables between `<!-- scaling:NAME -->` markers in docs/scaling.md, and draws Fig. 5 and Fig. 6 per budget.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nextscale.marked_sections import replace_marked_sections
from nextscale.scaling.analysis import curves_from_runs, scaling_fits

DOCS = Path(__file__).resolve().parents[1]
DATA = DOCS / "data" / "scaling"
DOCUMENT = DOCS / "scaling.md"

# Tian et al. 2024, Fig. 5 (N in billions) and Fig. 6 (C_min in PFLOPs): (beta, alpha, Pearson r)
PAPER_LAWS = {
    "N": {"L_last": (2.0, -0.23, -0.998), "L_avg": (2.5, -0.20, -0.998),
          "Err_last": (4.9e2, -0.016, -0.998), "Err_avg": (6.5e2, -0.010, -0.998)},
    "C_min": {"L_last": (2.2e-5, -0.13, -0.99), "L_avg": (1.5e-5, -0.16, -0.99),
              "Err_last": (8.1e-2, -0.0067, -0.99), "Err_avg": (4.4e-2, -0.011, -0.99)},
}  # fmt: skip
AXES = {"N": "against_parameters", "C_min": "against_compute"}


def budgets(runs: list[dict]) -> list[int]:
    return sorted({run["token_budget"] for run in runs})


def common_depths(runs: list[dict]) -> list[int]:
    """The depths every token budget has: the sizes on which the budgets' exponents are compared."""
    per_budget = [{run["depth"] for run in runs if run["token_budget"] == budget} for budget in budgets(runs)]
    return sorted(set.intersection(*per_budget)) if per_budget else []


def fit_records(runs: list[dict]) -> list[dict]:
    """fits.json: one record per (token budget, x, metric) over all of the budget's runs ("sizes": "all"), and where
    there are several budgets, one more per (budget, x, metric) over the sizes every budget has ("sizes":
    "matched"), so that the exponents of two budgets are compared on the same models."""
    records = []
    matched = common_depths(runs)
    for budget in budgets(runs):
        everything = [run for run in runs if run["token_budget"] == budget]
        selections = [("all", everything)]
        if len(budgets(runs)) > 1 and len(matched) >= 2:
            selections.append(("matched", [run for run in everything if run["depth"] in matched]))
        for sizes, chosen in selections:
            fits = scaling_fits(curves_from_runs(chosen))
            depths = sorted({run["depth"] for run in chosen})
            for x, axis in AXES.items():
                for metric, fit in fits[axis].items():
                    records.append({"x": x, "y": metric, "token_budget": budget, "sizes": sizes, "depths": depths,
                                    "runs": len(chosen), **fit})  # fmt: skip
    return records


def _law(beta: float, alpha: float, x: str) -> str:
    return f"({beta:.3g}·{x})^{alpha:.4f}"


def runs_table(runs: list[dict]) -> str:
    lines = ["| run | token budget | width | heads | N | steps | evaluated at | L_last | L_avg | Err_last | Err_avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in sorted(runs, key=lambda r: (r["token_budget"], r["depth"], r["seed"])):
        last = run["points"][-1]
        steps = ", ".join(str(p["step"]) for p in run["points"])
        lines.append(
            f"| {run['name']} | {run['token_budget'] / 1e6:.2f}M | {run['width']} | {run['heads']} | "
            f"{run['parameters'] / 1e6:.2f}M | {run['steps']} | {steps} | {last['L_last']:.4f} | {last['L_avg']:.4f} | "
            f"{last['Err_last']:.4f} | {last['Err_avg']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def fits_table(fits: list[dict]) -> str:
    lines = ["| token budget | metric | against | law (nextscale) | α, 90 % interval | r | points | rms log residual | "
             "with a floor: L∞ + (β·X)^α | rms | paper (ImageNet 256) | paper r |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in fits:
        if f["sizes"] != "all":
            continue
        paper_beta, paper_alpha, paper_r = PAPER_LAWS[f["x"]][f["y"]]
        low, high = f["alpha_interval_90"]
        floor = f["floor"]
        lines.append(
            f"| {f['token_budget'] / 1e6:.2f}M | {f['y']} | {f['x']} | {_law(f['beta'], f['alpha'], f['x'])} | "
            f"[{low:.4f}, {high:.4f}] | {f['pearson_r']:.4f} | {f['points']} | {f['rms_log_residual']:.4f} | "
            f"{floor['floor']:.3f} + {_law(floor['beta'], floor['alpha'], f['x'])} | {floor['rms_log_residual']:.4f} | "
            f"{_law(paper_beta, paper_alpha, f['x'])} | {paper_r} |"
        )
    return "\n".join(lines) + "\n"


def residuals_table(fits: list[dict]) -> str:
    """The log residuals of the fits against N, smallest N first: a run of signs (+ … − … +) is curvature."""
    lines = ["| token budget | metric | log residuals against N, smallest N first |", "|---|---|---|"]
    for f in fits:
        if f["x"] != "N" or f["sizes"] != "all":
            continue
        order = sorted(range(len(f["xy"])), key=lambda i: f["xy"][i][0])
        shown = " ".join(f"{f['log_residuals'][i]:+.3f}" for i in order)
        lines.append(f"| {f['token_budget'] / 1e6:.2f}M | {f['y']} | {shown} |")
    return "\n".join(lines) + "\n"


def budgets_table(fits: list[dict]) -> str:
    """α of every metric against N and against C_min per token budget, on the sizes every budget has: whether the
    exponents steepen with longer training (the intervals say whether a change is more than the fit's spread)."""
    matched = [f for f in fits if f["sizes"] == "matched"]
    if not matched:
        return "(one token budget so far)\n"
    depths = ", ".join(f"d{d}" for d in matched[0]["depths"])
    lines = [f"| metric | against | token budget | α ({depths}) | 90 % interval | r |", "|---|---|---|---|---|---|"]
    for f in sorted(matched, key=lambda f: (f["x"] != "N", METRIC_ORDER.index(f["y"]), f["token_budget"])):
        low, high = f["alpha_interval_90"]
        lines.append(f"| {f['y']} | {f['x']} | {f['token_budget'] / 1e6:.2f}M | {f['alpha']:.4f} | "
                     f"[{low:.4f}, {high:.4f}] | {f['pearson_r']:.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


METRIC_ORDER = ("L_last", "L_avg", "Err_last", "Err_avg")


def render(document: str, runs: list[dict], fits: list[dict]) -> str:
    sections = {"runs": runs_table(runs), "fits": fits_table(fits), "residuals": residuals_table(fits),
                "budgets": budgets_table(fits)}  # fmt: skip
    return replace_marked_sections(document, "scaling", sections)


def import_sweep(sweep: Path, data: Path) -> None:
    """Add (or replace, by name and token budget) the runs of a sweep folder's runs.json."""
    new = json.loads((sweep / "runs.json").read_text())
    path = data / "runs.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    keys = {(r["name"], r["token_budget"]) for r in new}
    runs = [r for r in runs if (r["name"], r["token_budget"]) not in keys] + new
    data.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=1) + "\n")


def draw(runs: list[dict], folder: Path) -> list[Path]:
    from nextscale.scaling.plots import plot_against_compute, plot_against_parameters

    paths = []
    for budget in budgets(runs):
        curves = curves_from_runs([run for run in runs if run["token_budget"] == budget])
        tag = f"{budget / 1e6:.0f}M_tokens"
        paths.append(plot_against_parameters(curves, folder / f"scaling_loss_vs_parameters_{tag}.png"))
        paths.append(plot_against_compute(curves, folder / f"scaling_loss_vs_compute_{tag}.png"))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of runs.json and fits.json")
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("--figures", type=Path, default=DOCS, help="where the figures go")
    parser.add_argument("--import", dest="sweep", type=Path, help="a sweep folder whose runs.json to add first")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when anything differs")
    args = parser.parse_args(argv)
    if args.sweep is not None:
        import_sweep(args.sweep, args.data)
    runs = json.loads((args.data / "runs.json").read_text())
    fits = fit_records(runs)
    fits_text = json.dumps(fits, indent=1) + "\n"
    document = args.document.read_text()
    rendered = render(document, runs, fits)
    fits_path = args.data / "fits.json"
    if args.check:
        fits_current = fits_path.is_file() and fits_path.read_text() == fits_text
        stale = [p for p, ok in ((args.document, rendered == document), (fits_path, fits_current)) if not ok]
        for path in stale:
            print(f"{path} is not what {args.data / 'runs.json'} gives: run {Path(__file__).name}", file=sys.stderr)
        return 1 if stale else 0
    fits_path.write_text(fits_text)
    args.document.write_text(rendered)
    figures = draw(runs, args.figures)
    print(f"{fits_path}, {args.document} and {len(figures)} figures written from {args.data / 'runs.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
