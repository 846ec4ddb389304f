"""Scaling laws of VAR: FLOPs and parameter counts from the architecture, power-law fits against N and C_min (the
Pareto frontier of a sweep's loss-vs-compute curves), the JSON of the fitted laws and the paper's figures.

    from nextscale.scaling import fit_power_law
    alpha, beta, r = fit_power_law(n_billions, loss)  # loss = (beta · N)^alpha

The plots (`nextscale.scaling.plots`) need matplotlib: pip install 'nextscale[scaling]'.
"""

from nextscale.scaling.analysis import (
    COMPUTE_UNIT,
    METRICS,
    PARAMETER_UNIT,
    FrontierFit,
    RunCurve,
    fit_against_compute,
    fit_against_parameters,
    scaling_fits,
    write_fits_json,
)
from nextscale.scaling.fit import PowerLawFit, fit_power_law
from nextscale.scaling.flops import (
    forward_flops_by_part,
    forward_flops_per_image,
    inference_flops_per_image,
    training_flops_per_image,
)
from nextscale.scaling.frontier import compute_optimal_points, pareto_frontier
from nextscale.scaling.parameters import parameter_count

__all__ = [
    "COMPUTE_UNIT",
    "METRICS",
    "PARAMETER_UNIT",
    "FrontierFit",
    "PowerLawFit",
    "RunCurve",
    "compute_optimal_points",
    "fit_against_compute",
    "fit_against_parameters",
    "fit_power_law",
    "forward_flops_by_part",
    "forward_flops_per_image",
    "inference_flops_per_image",
    "parameter_count",
    "pareto_frontier",
    "scaling_fits",
    "training_flops_per_image",
    "write_fits_json",
]
