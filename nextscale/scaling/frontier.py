"""The Pareto frontier of a sweep's loss-vs-compute curves, and the C_min of each loss on it.

Every run of a sweep is evaluated at several points of its training: (compute spent so far, loss). For a loss value
ℓ, C_min(ℓ) is the least compute at which any run reached a loss ≤ ℓ. The VAR paper fits its compute law to the
points (C_min, ℓ) of the frontier, the lower-left envelope of all runs' points.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from nextscale.errors import UsageError


def _points(curves: Iterable) -> np.ndarray:
    arrays = []
    for i, curve in enumerate(curves):
        array = np.asarray(curve, dtype=np.float64)
        if array.size == 0:
            continue
        if array.ndim != 2 or array.shape[1] != 2:
            raise UsageError(f"curve {i} must be a sequence of (compute, loss) pairs, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise UsageError(f"curve {i} holds values that are not finite")
        if np.any(array[:, 0] < 0):
            raise UsageError(f"curve {i} has negative compute: {array[array[:, 0] < 0, 0].tolist()}")
        arrays.append(array)
    if not arrays:
        raise UsageError("the Pareto frontier needs at least one (compute, loss) point")
    return np.concatenate(arrays)


def pareto_frontier(curves: Iterable) -> list[tuple[float, float]]:
    """The points of all curves that no other point beats, sorted by compute.

    `curves`: one sequence of (compute, loss) pairs per run (any order). A point (c, ℓ) is on the frontier when no
    point of any run has compute ≤ c and loss ≤ ℓ with at least one of the two strictly smaller; repeated points
    appear once. Along the result compute strictly rises and loss strictly falls, and each point is (C_min(ℓ), ℓ):
    the least compute at which any run reached a loss ≤ ℓ is exactly c."""
    points = _points(curves)
    order = np.lexsort((points[:, 1], points[:, 0]))  # by compute, then by loss
    frontier: list[tuple[float, float]] = []
    best = np.inf
    for compute, loss in points[order]:
        if loss < best:  # lower than every point with less or equal compute (ties in compute: the lowest comes first)
            frontier.append((float(compute), float(loss)))
            best = loss
    return frontier


def compute_optimal_points(curves: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """(C_min, loss) arrays of the Pareto frontier, ready for `fit_power_law(c_min, loss)`. Points at zero compute
    (an evaluation before the first step) are left out before the frontier is taken: a power law has no value there."""
    points = _points(curves)
    frontier = pareto_frontier([points[points[:, 0] > 0]])
    compute, loss = (np.array(column, dtype=np.float64) for column in zip(*frontier))
    return compute, loss
