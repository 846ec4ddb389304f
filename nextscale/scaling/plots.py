"""Figures of a sweep like the VAR paper's Fig. 5 (each metric against N) and Fig. 6 (against C_min), as PNG.

matplotlib is an optional dependency (the `scaling` extra), imported on first use. The figures are drawn on the Agg
canvas directly, without pyplot, so nothing global (backend, rcParams, open figures) is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nextscale.scaling.analysis import (
    COMPUTE_UNIT,
    METRICS,
    PARAMETER_UNIT,
    RunCurve,
    fit_against_compute,
    fit_against_parameters,
)
from nextscale.scaling.fit import PowerLawFit

INSTALL_HINT = "pip install 'nextscale[scaling]'"
PARAMETER_UNIT_NAMES = {1.0: "parameters", 1e3: "thousands of parameters", 1e6: "millions", 1e9: "billions"}
COMPUTE_UNIT_NAMES = {1.0: "FLOPs", 1e9: "GFLOPs", 1e12: "TFLOPs", 1e15: "PFLOPs", 1e18: "EFLOPs"}


def _figure_classes():
    """(Figure, FigureCanvasAgg), or an ImportError that says how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional: the scaling extra
        from matplotlib.figure import Figure  # optional: the scaling extra
    except ImportError as err:
        raise ImportError(f"scaling plots need matplotlib ({err}); {INSTALL_HINT}") from err
    return Figure, FigureCanvasAgg


def _tex_name(metric: str) -> str:
    """'L_last' → L_{\\mathrm{last}}, 'Err_avg' → \\mathrm{Err}_{\\mathrm{avg}} (mathtext)."""
    head, _, tail = metric.partition("_")
    head = head if len(head) == 1 else rf"\mathrm{{{head}}}"
    return rf"{head}_{{\mathrm{{{tail}}}}}" if tail else head


def _tex_number(value: float) -> str:
    """2.0 → 2.0, 490 → 4.9\\cdot10^{2}, 2.2e-5 → 2.2\\cdot10^{-5}, as the paper writes β."""
    mantissa, exponent = f"{value:.1e}".split("e")
    exponent_value = int(exponent)
    return mantissa if exponent_value == 0 else rf"{mantissa}\cdot10^{{{exponent_value}}}"


def law_label(law: PowerLawFit, metric: str, x_name: str) -> str:
    """Legend text: the law in the paper's form and its Pearson r."""
    return rf"${_tex_name(metric)} = ({_tex_number(law.beta)}\,{x_name})^{{{law.alpha:.3g}}}$, r = {law.pearson_r:.3f}"


def _unit_name(unit: float, names: dict[float, str], fallback: str) -> str:
    return names.get(float(unit), f"{fallback} / {unit:g}")


def _draw_law(axes, law: PowerLawFit, x: np.ndarray, metric: str, x_name: str) -> None:
    grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 100)
    axes.plot(grid, law.predict(grid), color="tab:red", linewidth=1.5, label=law_label(law, metric, x_name))


def _style(axes, **labels) -> None:
    """Log-log axes with a grid; y ticks as plain numbers (a metric often spans less than a decade)."""
    from matplotlib.ticker import FormatStrFormatter  # optional: the scaling extra

    axes.set(xscale="log", yscale="log", **labels)
    axes.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    axes.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")


def _save(figure, canvas_class, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas_class(figure)
    figure.savefig(path, format="png", dpi=120)
    return path


def plot_against_parameters(
    runs: Sequence[RunCurve],
    path: str | Path,
    *,
    metrics: Sequence[str] = METRICS,
    parameter_unit: float = PARAMETER_UNIT,
) -> Path:
    """Fig. 5: one panel per metric, its final value per run against N on log-log axes, with the fitted law."""
    Figure, canvas_class = _figure_classes()
    figure = Figure(figsize=(4.2 * len(metrics), 3.8), layout="constrained")
    unit = _unit_name(parameter_unit, PARAMETER_UNIT_NAMES, "parameters")
    n_x = np.array([run.parameters / parameter_unit for run in runs])
    for axes, metric in zip(np.atleast_1d(figure.subplots(1, len(metrics))), metrics):
        law = fit_against_parameters(runs, metric, parameter_unit=parameter_unit)
        axes.scatter(n_x, [run.final(metric) for run in runs], color="tab:blue", zorder=3, label="runs (final)")
        _draw_law(axes, law, n_x, metric, "N")
        _style(axes, xlabel=f"N ({unit})", ylabel=metric, title=f"{metric} against N")
    return _save(figure, canvas_class, path)


def plot_against_compute(
    runs: Sequence[RunCurve],
    path: str | Path,
    *,
    metrics: Sequence[str] = METRICS,
    compute_unit: float = COMPUTE_UNIT,
    compute_range: tuple[float, float] | None = None,
) -> Path:
    """Fig. 6: one panel per metric, every run's curve faintly (coloured by size), the Pareto frontier points that
    were fitted and the law against C_min, on log-log axes."""
    Figure, canvas_class = _figure_classes()
    from matplotlib import colormaps  # optional: the scaling extra

    figure = Figure(figsize=(4.2 * len(metrics), 4.2), layout="constrained")
    unit = _unit_name(compute_unit, COMPUTE_UNIT_NAMES, "FLOPs")
    colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(runs)))
    by_size = sorted(range(len(runs)), key=lambda i: runs[i].parameters)
    run_lines = []
    for axes, metric in zip(np.atleast_1d(figure.subplots(1, len(metrics))), metrics):
        frontier = fit_against_compute(runs, metric, compute_unit=compute_unit, compute_range=compute_range)
        run_lines = []
        for colour, i in zip(colours, by_size):
            compute = np.array(runs[i].flops) / compute_unit
            kept = compute > 0  # log axes: the evaluation before training has no place
            (line,) = axes.plot(compute[kept], np.array(runs[i].values(metric))[kept], color=colour, alpha=0.4)
            run_lines.append((line, f"{runs[i].name} (N = {runs[i].parameters / 1e6:.3g}M)"))
        axes.scatter(frontier.c_min, frontier.values, color="black", s=14, zorder=3, label="Pareto frontier")
        _draw_law(axes, frontier.law, frontier.c_min, metric, "C")
        _style(axes, xlabel=f"C_min ({unit})", ylabel=metric, title=f"{metric} against C_min")
    figure.legend(
        [line for line, _ in run_lines], [name for _, name in run_lines], loc="outside lower center",
        ncols=min(len(runs), 6), fontsize="small",
    )  # fmt: skip
    return _save(figure, canvas_class, path)
