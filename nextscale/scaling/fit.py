"""The power law L = (β·X)^α of the VAR paper, fitted by least squares in log-log space.

Taking logs, log L = α·log X + α·log β: a straight line in (log X, log L) with slope α and intercept α·log β. The
fit is the ordinary least-squares line through the points (log Xᵢ, log Lᵢ), so β = exp(intercept / α); the
Pearson correlation r of log X and log L says how straight the points lie (−1: exactly on a falling law).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class PowerLawFit(NamedTuple):
    """L = (β·X)^α with the Pearson r of the log-log points; unpacks as (alpha, beta, pearson_r)."""

    alpha: float
    beta: float
    pearson_r: float

    def predict(self, x):
        """L at X (a number or an array)."""
        return (self.beta * np.asarray(x, dtype=np.float64)) ** self.alpha

    def equation(self, y_name: str = "L", x_name: str = "X") -> str:
        """The law as text in the paper's form, e.g. 'L = (2.2e-05·C)^-0.130'."""
        return f"{y_name} = ({self.beta:.2g}·{x_name})^{self.alpha:.3g}"

    def to_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "pearson_r": self.pearson_r}


def _positive_finite(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds values that are not finite: {array[~np.isfinite(array)].tolist()}")
    if np.any(array <= 0):
        raise ValueError(f"{name} must be positive for a log-log fit, got {array[array <= 0].tolist()}")
    return array


def fit_power_law(x, y) -> PowerLawFit:
    """Fit y = (β·x)^α by least squares on (log x, log y); return (alpha, beta, pearson_r) as a `PowerLawFit`.

    `x`, `y`: equal-length sequences of positive finite numbers, at least two points, x not all equal and y not all
    equal (a flat line has α = 0 and no β). Raises a one-line ValueError otherwise."""
    x_array, y_array = _positive_finite(x, "x"), _positive_finite(y, "y")
    if x_array.shape != y_array.shape:
        raise ValueError(f"x and y must have the same length, got {x_array.size} and {y_array.size}")
    if x_array.size < 2:
        raise ValueError(f"a power-law fit needs at least 2 points, got {x_array.size}")
    log_x, log_y = np.log(x_array), np.log(y_array)
    dx, dy = log_x - log_x.mean(), log_y - log_y.mean()
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    if sxx == 0:
        raise ValueError(f"x must not be all equal (got {x_array[0]} everywhere): the slope is undefined")
    if syy == 0:
        raise ValueError(f"y must not be all equal (got {y_array[0]} everywhere): α = 0 leaves β undefined")
    alpha = sxy / sxx
    if alpha == 0:
        raise ValueError("y shows no trend with x (fitted α = 0): β is undefined")
    intercept = log_y.mean() - alpha * log_x.mean()  # = α·log β
    return PowerLawFit(alpha=alpha, beta=math.exp(intercept / alpha), pearson_r=sxy / math.sqrt(sxx * syy))
