"""A sweep's scaling analysis: each metric fitted against N (final points) and against C_min (Pareto frontier), and
the JSON of the fitted laws.

The four metrics of the VAR paper (Fig. 5 and 6) are the test cross-entropy of the last scale and of all scales
(L_last, L_avg) and the token error rate of the last scale and of all scales (Err_last, Err_avg, as fractions in
[0, 1] like the paper's, 1 − top-1 accuracy). Units follow the paper: N in billions of parameters, compute in PFLOPs
(10¹⁵ FLOPs); β depends on them, α and r do not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nextscale.errors import UsageError
from nextscale.scaling.fit import (
    PowerLawFit,
    bootstrap_alpha_interval,
    fit_power_law,
    fit_with_floor,
    log_residuals,
)
from nextscale.scaling.frontier import compute_optimal_points

METRICS = ("L_last", "L_avg", "Err_last", "Err_avg")
PARAMETER_UNIT = 1e9  # N in billions, as the paper
COMPUTE_UNIT = 1e15  # C in PFLOPs, as the paper


@dataclass(frozen=True)
class RunCurve:
    """One run of a sweep: its parameter count N and its evaluations, each at a cumulative training compute."""

    name: str
    parameters: int  # N, all of the transformer's parameters (nextscale.scaling.parameter_count)
    flops: tuple[float, ...]  # training FLOPs spent before each evaluation, non-decreasing
    metrics: Mapping[str, tuple[float, ...]]  # metric name → its value at each evaluation

    def __post_init__(self) -> None:
        object.__setattr__(self, "flops", tuple(float(f) for f in self.flops))
        object.__setattr__(self, "metrics", {k: tuple(float(v) for v in vs) for k, vs in self.metrics.items()})
        if not self.flops:
            raise UsageError(f"run {self.name!r} has no evaluations")
        if any(b < a for a, b in zip(self.flops, self.flops[1:])):
            raise UsageError(f"run {self.name!r}: the compute of its evaluations must not decrease")
        for metric, values in self.metrics.items():
            if len(values) != len(self.flops):
                raise UsageError(
                    f"run {self.name!r}: {metric} has {len(values)} values for {len(self.flops)} evaluations"
                )

    def values(self, metric: str) -> tuple[float, ...]:
        if metric not in self.metrics:
            raise UsageError(f"run {self.name!r} has no metric {metric!r} (it has {', '.join(self.metrics)})")
        return self.metrics[metric]

    def final(self, metric: str) -> float:
        """The metric at the last evaluation (the most compute)."""
        return self.values(metric)[-1]

    def curve(self, metric: str) -> list[tuple[float, float]]:
        """(compute, value) at every evaluation."""
        return list(zip(self.flops, self.values(metric)))

    def to_dict(self) -> dict:
        return {"name": self.name, "parameters": self.parameters, "flops": list(self.flops), "metrics": self.metrics}


def curves_from_runs(runs: Sequence[dict], metrics: Sequence[str] = METRICS) -> list[RunCurve]:
    """RunCurves from the records of a sweep's runs.json (each with `name`, `parameters` and `points`, every point
    with `pflops` and the metrics)."""
    return [
        RunCurve(
            name=run["name"],
            parameters=run["parameters"],
            flops=[point["pflops"] * COMPUTE_UNIT for point in run["points"]],
            metrics={metric: [point[metric] for point in run["points"]] for metric in metrics},
        )
        for run in runs
    ]


class FrontierFit(NamedTuple):
    """A law fitted to the Pareto frontier: the law and the frontier points (C_min in compute units, value)."""

    law: PowerLawFit
    c_min: np.ndarray
    values: np.ndarray


def fit_against_parameters(
    runs: Sequence[RunCurve], metric: str, *, parameter_unit: float = PARAMETER_UNIT
) -> PowerLawFit:
    """metric = (β·N)^α over the runs' final evaluations, N in `parameter_unit` parameters."""
    if len(runs) < 2:
        raise UsageError(f"a fit against N needs at least 2 runs, got {len(runs)}")
    return fit_power_law([run.parameters / parameter_unit for run in runs], [run.final(metric) for run in runs])


def fit_against_compute(
    runs: Sequence[RunCurve],
    metric: str,
    *,
    compute_unit: float = COMPUTE_UNIT,
    compute_range: tuple[float, float] | None = None,
) -> FrontierFit:
    """metric = (β·C_min)^α over the Pareto frontier of every evaluation of every run, C in `compute_unit` FLOPs.
    `compute_range` (low, high) in the same unit keeps only the frontier points inside it (e.g. to leave out the
    first steps, where no power law holds yet)."""
    c_min, values = compute_optimal_points([run.curve(metric) for run in runs])
    c_min = c_min / compute_unit
    if compute_range is not None:
        low, high = compute_range
        inside = (c_min >= low) & (c_min <= high)
        c_min, values = c_min[inside], values[inside]
    if c_min.size < 2:
        raise UsageError(f"the Pareto frontier of {metric} has {c_min.size} point(s) to fit; at least 2 are needed")
    return FrontierFit(fit_power_law(c_min, values), c_min, values)


def scaling_fits(
    runs: Sequence[RunCurve],
    *,
    metrics: Sequence[str] = METRICS,
    parameter_unit: float = PARAMETER_UNIT,
    compute_unit: float = COMPUTE_UNIT,
    compute_range: tuple[float, float] | None = None,
) -> dict:
    """Every metric's law against N and against C_min, as a JSON-ready dict: {"law", "units", "against_parameters":
    {metric: fit}, "against_compute": {metric: fit}, "runs": [{name, parameters, flops, final: {metric: value}}]},
    each fit {alpha, beta, pearson_r, points, xy: [[x, y], …] (the points fitted: every run's final evaluation
    against N, the Pareto frontier against C_min), log_residuals, alpha_interval_90 (bootstrap over the points) and
    floor: the fit L = L∞ + (β·X)^α (see `fit_with_floor`)}; against C_min also "frontier" (= xy)."""
    against_parameters, against_compute = {}, {}
    for metric in metrics:
        law = fit_against_parameters(runs, metric, parameter_unit=parameter_unit)
        n_x = [run.parameters / parameter_unit for run in runs]
        against_parameters[metric] = fit_record(law, n_x, [run.final(metric) for run in runs])
        frontier = fit_against_compute(runs, metric, compute_unit=compute_unit, compute_range=compute_range)
        against_compute[metric] = fit_record(frontier.law, frontier.c_min, frontier.values)
        against_compute[metric]["frontier"] = against_compute[metric]["xy"]
    return {
        "law": "metric = (beta * X)^alpha, least squares in log-log space; pearson_r of log X and log metric",
        "units": {"parameters": parameter_unit, "compute_flops": compute_unit},
        "against_parameters": against_parameters,
        "against_compute": against_compute,
        "runs": [
            {
                "name": run.name,
                "parameters": run.parameters,
                "flops": run.flops[-1],
                "final": {metric: run.final(metric) for metric in metrics},
            }
            for run in runs
        ],
    }


def fit_record(law: PowerLawFit, x, y) -> dict:
    """A fitted law with its points and the statistics that say how much to trust it (see `scaling_fits`)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    record = {**law.to_dict(), "points": int(x.size), "xy": [[float(a), float(b)] for a, b in zip(x, y)]}
    record["log_residuals"] = [float(r) for r in log_residuals(law, x, y)]
    record["alpha_interval_90"] = list(bootstrap_alpha_interval(x, y)) if x.size >= 3 else None
    if x.size >= 3:
        floor = fit_with_floor(x, y)
        record["floor"] = {"floor": floor.floor, "alpha": floor.alpha, "beta": floor.beta,
                           "rms_log_residual": floor.rms_log_residual}  # fmt: skip
        record["rms_log_residual"] = float(np.sqrt(np.mean(np.square(record["log_residuals"]))))
    return record


def write_fits_json(runs: Sequence[RunCurve], path: str | Path, **options) -> Path:
    """Write `scaling_fits(runs, **options)` to `path` (atomically: a temporary file, then a rename)."""
    path = Path(path)
    result = scaling_fits(runs, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temporary, path)
    return path
