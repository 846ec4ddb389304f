"""The power law L = (β·X)^α of the VAR paper, fitted by least squares in log-log space.

Taking logs, log L = α·log X + α·log β: a straight line in (log X, log L) with slope α and intercept α·log β. The
fit is the ordinary least-squares line through the points (log Xᵢ, log Lᵢ), so β = exp(intercept / α); the
Pearson correlation r of log X and log L says how straight the points lie (−1: exactly on a falling law).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from nextscale.errors import UsageError


class PowerLawFit(NamedTuple):
    """L = (β·X)^α with the Pearson r of the log-log points; unpacks as (alpha, beta, pearson_r)."""

    alpha: float
    beta: float
    pearson_r: float

    def predict(self, x):
        """L at X (a number or an array)."""
        return (self.beta * np.asarray(x, dtype=np.float64)) ** self.alpha

    def to_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "pearson_r": self.pearson_r}


def _positive_finite(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise UsageError(f"{name} must be a 1-D sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise UsageError(f"{name} holds values that are not finite: {array[~np.isfinite(array)].tolist()}")
    if np.any(array <= 0):
        raise UsageError(f"{name} must be positive for a log-log fit, got {array[array <= 0].tolist()}")
    return array


def fit_power_law(x, y) -> PowerLawFit:
    """Fit y = (β·x)^α by least squares on (log x, log y); return (alpha, beta, pearson_r) as a `PowerLawFit`.

    `x`, `y`: equal-length sequences of positive finite numbers, at least two points, x not all equal and y not all
    equal (a flat line has α = 0 and no β). Raises a one-line UsageError (a ValueError) otherwise."""
    x_array, y_array = _positive_finite(x, "x"), _positive_finite(y, "y")
    if x_array.shape != y_array.shape:
        raise UsageError(f"x and y must have the same length, got {x_array.size} and {y_array.size}")
    if x_array.size < 2:
        raise UsageError(f"a power-law fit needs at least 2 points, got {x_array.size}")
    log_x, log_y = np.log(x_array), np.log(y_array)
    dx, dy = log_x - log_x.mean(), log_y - log_y.mean()
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    if sxx == 0:
        raise UsageError(f"x must not be all equal (got {x_array[0]} everywhere): the slope is undefined")
    if syy == 0:
        raise UsageError(f"y must not be all equal (got {y_array[0]} everywhere): α = 0 leaves β undefined")
    alpha = sxy / sxx
    if alpha == 0:
        raise UsageError("y shows no trend with x (fitted α = 0): β is undefined")
    intercept = log_y.mean() - alpha * log_x.mean()  # = α·log β
    if abs(intercept / alpha) > 700:
        raise UsageError(f"y barely trends with x (fitted α = {alpha:.3g}): β = exp({intercept / alpha:.3g}) overflows")
    return PowerLawFit(alpha=alpha, beta=math.exp(intercept / alpha), pearson_r=sxy / math.sqrt(sxx * syy))


def log_residuals(law: PowerLawFit, x, y) -> np.ndarray:
    """log y − log of the law's prediction at every point: the straight line's misses, in log units."""
    return np.log(np.asarray(y, dtype=np.float64)) - np.log(law.predict(x))


def bootstrap_alpha_interval(x, y, *, level: float = 0.9, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The central `level` interval of α over `draws` refits on points drawn with replacement (draws whose x are all
    equal, which fix no slope, are skipped). With few points it is wide, which is the point."""
    x_array, y_array = _positive_finite(x, "x"), _positive_finite(y, "y")
    if x_array.size < 3:
        raise UsageError(f"a bootstrap interval needs at least 3 points, got {x_array.size}")
    generator = np.random.default_rng(seed)
    log_x, log_y = np.log(x_array), np.log(y_array)
    alphas = []
    for _ in range(draws):
        pick = generator.integers(0, x_array.size, x_array.size)
        dx = log_x[pick] - log_x[pick].mean()
        sxx = float(dx @ dx)
        if sxx > 0:
            alphas.append(float(dx @ (log_y[pick] - log_y[pick].mean())) / sxx)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(alphas, [tail, 100 - tail])
    return float(low), float(high)


class FloorFit(NamedTuple):
    """L = L∞ + (β·X)^α: a power law above an irreducible floor L∞ (the form the paper's Fig. 5 loss axis implies)."""

    floor: float
    alpha: float
    beta: float
    rms_log_residual: float  # of log L against the fitted curve, comparable with the plain law's

    def predict(self, x):
        return self.floor + (self.beta * np.asarray(x, dtype=np.float64)) ** self.alpha


def fit_with_floor(x, y, *, grid: int = 400) -> FloorFit:
    """L = L∞ + (β·X)^α with L∞ searched on a grid in [0, min L) (a power law fitted to L − L∞ at each), keeping the
    L∞ whose curve misses log L least. L∞ = 0 is the plain power law; a floor well above 0 with smaller residuals
    says the points bend towards a limit, which a straight log-log line cannot show."""
    x_array, y_array = _positive_finite(x, "x"), _positive_finite(y, "y")
    if x_array.size < 3:
        raise UsageError(f"a fit with a floor needs at least 3 points, got {x_array.size}")
    best = None
    for floor in np.linspace(0.0, y_array.min(), grid, endpoint=False):
        try:
            law = fit_power_law(x_array, y_array - floor)
        except ValueError:
            continue
        predicted = floor + law.predict(x_array)
        rms = float(np.sqrt(np.mean((np.log(y_array) - np.log(predicted)) ** 2)))
        if best is None or rms < best.rms_log_residual:
            best = FloorFit(float(floor), law.alpha, law.beta, rms)
    if best is None:
        raise UsageError("no floor gives a power law through these points")
    return best
