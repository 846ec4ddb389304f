"""Scaling laws of VAR: power-law fits against N and C_min (the Pareto frontier of a sweep's loss-vs-compute curves),
the JSON of the fitted laws and the paper's figures. FLOPs and parameter counts live with the model
(`nextscale.model.cost`) and are re-exported here; the sweep that trains the runs is `nextscale.experiments.scaling`.

    from nextscale.scaling import fit_power_law
    alpha, beta, r = fit_power_law(n_billions, loss)  # loss = (beta · N)^alpha

The plots (`nextscale.scaling.plots`) need matplotlib: pip install 'nextscale[scaling]'.
"""

from nextscale.model.cost import (
    forward_flops_by_part,
    forward_flops_per_image,
    inference_flops_per_image,
    parameter_count,
    training_flops_per_image,
)
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
from nextscale.scaling.frontier import compute_optimal_points, pareto_frontier

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
