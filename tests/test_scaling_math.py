"""Power-law fits, the Pareto frontier of loss-vs-compute curves, and the sweep's JSON and figures."""

import json
import sys

import numpy as np
import pytest

from nextscale.scaling import (
    METRICS,
    RunCurve,
    compute_optimal_points,
    fit_against_compute,
    fit_against_parameters,
    fit_power_law,
    pareto_frontier,
    write_fits_json,
)

# the paper's laws against N (billions): metric → (alpha, beta)
PAPER_N_LAWS = {"L_last": (-0.23, 2.0), "L_avg": (-0.20, 2.5), "Err_last": (-0.016, 4.9e2), "Err_avg": (-0.010, 6.5e2)}
# laws against C (PFLOPs) for the synthetic sweep: the paper's α, β × 10⁷ so that they fall below the N laws' values
SWEEP_C_LAWS = {
    "L_last": (-0.13, 2.2e2),
    "L_avg": (-0.16, 1.5e2),
    "Err_last": (-0.0067, 8.1e5),
    "Err_avg": (-0.011, 4.4e5),
}


def law(alpha: float, beta: float, x):
    return (beta * np.asarray(x, dtype=np.float64)) ** alpha


@pytest.mark.parametrize("metric", list(PAPER_N_LAWS))
def test_fit_recovers_a_known_law_exactly(metric):
    alpha, beta = PAPER_N_LAWS[metric]
    n = np.array([0.0185, 0.06, 0.31, 0.6, 1.0, 2.0])
    fit = fit_power_law(n, law(alpha, beta, n))
    assert fit.alpha == pytest.approx(alpha, abs=1e-6)
    assert fit.beta == pytest.approx(beta, rel=1e-6)
    assert fit.pearson_r == pytest.approx(-1.0, abs=1e-12)
    fitted_alpha, fitted_beta, r = fit  # unpacks as a tuple
    assert (fitted_alpha, fitted_beta, r) == (fit.alpha, fit.beta, fit.pearson_r)
    np.testing.assert_allclose(fit.predict(n), law(alpha, beta, n), rtol=1e-9)


def test_rising_law_has_r_plus_one_and_noisy_points_get_the_least_squares_line():
    x = np.geomspace(1, 1e4, 7)
    rising = fit_power_law(x, law(0.5, 3.0, x))
    assert rising.alpha == pytest.approx(0.5, abs=1e-9) and rising.beta == pytest.approx(3.0, rel=1e-9)
    assert rising.pearson_r == pytest.approx(1.0, abs=1e-12)
    noise = np.exp(np.random.default_rng(0).normal(0, 0.05, x.size))
    y = law(-0.2, 2.0, x) * noise
    fit = fit_power_law(list(x), list(y))
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)  # numpy's least squares as the independent reference
    assert fit.alpha == pytest.approx(slope, rel=1e-9)
    assert fit.alpha * np.log(fit.beta) == pytest.approx(intercept, rel=1e-9)
    assert fit.pearson_r == pytest.approx(np.corrcoef(np.log(x), np.log(y))[0, 1], rel=1e-9)
    assert -1 < fit.pearson_r < -0.9


@pytest.mark.parametrize(
    "x, y, message",
    [
        ([1, 2, 3], [1, 0, 2], "y must be positive"),
        ([1, -2, 3], [1, 2, 3], "x must be positive"),
        ([1, float("nan"), 3], [1, 2, 3], "x holds values that are not finite"),
        ([1, 2, 3], [1, float("inf"), 3], "y holds values that are not finite"),
        ([1], [2], "at least 2 points"),
        ([1, 2], [1, 2, 3], "same length"),
        ([2, 2, 2], [1, 2, 3], "x must not be all equal"),
        ([1, 2, 3], [4, 4, 4], "y must not be all equal"),
        ([[1, 2], [3, 4]], [1, 2], "1-D"),
    ],
)
def test_fit_rejects_bad_input_with_one_line(x, y, message):
    with pytest.raises(ValueError, match=message) as error:
        fit_power_law(x, y)
    assert "\n" not in str(error.value)


# three runs by hand: small (A), large (B) and one (C) that only repeats or trails the others
CURVE_A = [(1.0, 5.0), (2.0, 4.0), (4.0, 3.5), (8.0, 3.3)]
CURVE_B = [(2.0, 4.5), (4.0, 3.2), (8.0, 2.8), (16.0, 2.5)]
CURVE_C = [(1.0, 5.0), (3.0, 4.0), (16.0, 2.5), (32.0, 2.5)]
ENVELOPE = [(1.0, 5.0), (2.0, 4.0), (4.0, 3.2), (8.0, 2.8), (16.0, 2.5)]


def test_pareto_frontier_of_hand_made_curves_is_their_lower_envelope():
    assert pareto_frontier([CURVE_A, CURVE_B, CURVE_C]) == ENVELOPE
    assert pareto_frontier([CURVE_C[::-1], CURVE_B, CURVE_A[::-1]]) == ENVELOPE  # order does not matter
    # C_min(ℓ): the least compute at which any run reached a loss ≤ ℓ
    for compute, loss in ENVELOPE:
        reached = [c for curve in (CURVE_A, CURVE_B, CURVE_C) for c, value in curve if value <= loss]
        assert min(reached) == compute


def test_pareto_frontier_holds_exactly_the_undominated_points():
    rng = np.random.default_rng(1)
    curves = [np.column_stack([np.sort(rng.uniform(0, 100, 12)), rng.uniform(1, 5, 12)]) for _ in range(5)]
    points = [tuple(p) for curve in curves for p in curve]
    frontier = pareto_frontier(curves)

    def dominated(p):
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)

    assert set(frontier) == {p for p in points if not dominated(p)}
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in zip(frontier, frontier[1:]))


def test_compute_optimal_points_leave_out_zero_compute_and_validate():
    c_min, loss = compute_optimal_points([[(0.0, 9.0)] + CURVE_A, CURVE_B])
    assert c_min.tolist() == [1.0, 2.0, 4.0, 8.0, 16.0] and loss.tolist() == [5.0, 4.0, 3.2, 2.8, 2.5]
    with pytest.raises(ValueError, match="negative compute"):
        pareto_frontier([[(-1.0, 2.0)]])
    with pytest.raises(ValueError, match="pairs"):
        pareto_frontier([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="at least one"):
        pareto_frontier([[]])


def synthetic_sweep() -> list[RunCurve]:
    """Four runs whose curves follow the C laws exactly up to a cap, then stay flat (an equal value at more compute
    never joins the frontier); their last evaluation carries the N law's value, above the run's best, so it never
    joins the frontier either; each starts with an evaluation at zero compute, which has no place on it."""
    runs = []
    for i, billions in enumerate((0.01, 0.03, 0.1, 0.3)):
        flops = np.geomspace(1e14, 1e16 * 10**i, 6 + 2 * i) * (1 + 0.1 * i)  # 0.1 … 10^(1+i) PFLOPs, offset per run
        metrics = {}
        for metric in METRICS:
            curve = law(*SWEEP_C_LAWS[metric], np.minimum(flops, flops[-3]) / 1e15)
            curve[-1] = law(*PAPER_N_LAWS[metric], billions)
            assert curve[-1] > curve[-2]
            metrics[metric] = [10.0] + curve.tolist()
        runs.append(RunCurve(f"run{i}", int(billions * 1e9), [0.0] + flops.tolist(), metrics))
    return runs


ON_LAW_POINTS = sum(6 + 2 * i - 2 for i in range(4))  # each run's points up to its cap


def test_sweep_fits_recover_the_laws_against_n_and_c_min():
    runs = synthetic_sweep()
    for metric in METRICS:
        fit_n = fit_against_parameters(runs, metric)
        assert (fit_n.alpha, fit_n.beta) == pytest.approx(PAPER_N_LAWS[metric], rel=1e-6)
        assert fit_n.pearson_r == pytest.approx(-1.0, abs=1e-9)
        frontier = fit_against_compute(runs, metric)
        assert frontier.c_min.size == ON_LAW_POINTS
        assert (frontier.law.alpha, frontier.law.beta) == pytest.approx(SWEEP_C_LAWS[metric], rel=1e-6)
        assert frontier.law.pearson_r == pytest.approx(-1.0, abs=1e-9)
        assert np.all(np.diff(frontier.c_min) > 0)
        inside = fit_against_compute(runs, metric, compute_range=(1.0, 100.0))
        assert inside.c_min.min() >= 1.0 and inside.c_min.max() <= 100.0 and inside.c_min.size < ON_LAW_POINTS
        assert fit_against_compute(runs, metric, compute_unit=1e12).law.beta == pytest.approx(
            SWEEP_C_LAWS[metric][1] / 1e3, rel=1e-6
        )
    with pytest.raises(ValueError, match="at least 2 runs"):
        fit_against_parameters(runs[:1], "L_last")
    with pytest.raises(ValueError, match="no metric 'FID'"):
        fit_against_parameters(runs, "FID")
    with pytest.raises(ValueError, match="must not decrease"):
        RunCurve("bad", 10, [2.0, 1.0], {"L_last": [3.0, 2.0]})
    with pytest.raises(ValueError, match="values for 2 evaluations"):
        RunCurve("bad", 10, [1.0, 2.0], {"L_last": [3.0]})


def test_json_holds_every_metrics_law_against_both_axes(tmp_path):
    runs = synthetic_sweep()
    path = write_fits_json(runs, tmp_path / "sweep" / "scaling_fits.json")
    result = json.loads(path.read_text())
    assert set(result) >= {"units", "against_parameters", "against_compute", "runs"}
    assert result["units"] == {"parameters": 1e9, "compute_flops": 1e15}
    for metric in METRICS:
        for axis, laws in (("against_parameters", PAPER_N_LAWS), ("against_compute", SWEEP_C_LAWS)):
            entry = result[axis][metric]
            assert set(entry) >= {"alpha", "beta", "pearson_r", "points"}
            assert (entry["alpha"], entry["beta"]) == pytest.approx(laws[metric], rel=1e-6)
        assert len(result["against_compute"][metric]["frontier"]) == result["against_compute"][metric]["points"]
    assert [run["name"] for run in result["runs"]] == ["run0", "run1", "run2", "run3"]
    assert result["runs"][0]["final"]["L_last"] == pytest.approx(2.0**-0.23 * 0.01**-0.23)
    assert not list(tmp_path.glob("sweep/*.tmp"))


def test_figures_are_written_as_png_without_touching_matplotlib_state(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    from nextscale.scaling.plots import law_label, plot_against_compute, plot_against_parameters

    backend, pyplot_loaded = matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules
    runs = synthetic_sweep()
    paths = [
        plot_against_parameters(runs, tmp_path / "figures" / "scaling_n.png"),
        plot_against_compute(runs, tmp_path / "figures" / "scaling_c.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            width, height = image.size
        assert width > 3 * height > 0  # four panels side by side
    assert matplotlib.get_backend() == backend and ("matplotlib.pyplot" in sys.modules) == pyplot_loaded
    label = law_label(fit_against_parameters(runs, "L_last"), "L_last", "N")
    assert label == r"$L_{\mathrm{last}} = (2.0\,N)^{-0.23}$, r = -1.000"
    c_label = law_label(fit_against_compute(runs, "Err_avg").law, "Err_avg", "C")
    assert c_label == r"$\mathrm{Err}_{\mathrm{avg}} = (4.4\cdot10^{5}\,C)^{-0.011}$, r = -1.000"


def test_figures_without_matplotlib_say_how_to_install_it(tmp_path, monkeypatch):
    from nextscale.scaling.plots import plot_against_parameters

    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"nextscale\[scaling\]"):
        plot_against_parameters(synthetic_sweep(), tmp_path / "n.png")


def test_the_bootstrap_interval_holds_the_true_alpha_of_a_noisy_law_in_most_draws():
    from nextscale.scaling.fit import bootstrap_alpha_interval

    x = np.geomspace(1e-4, 5e-3, 10)  # ten sizes over 1.7 decades, as a CPU sweep with two seeds
    generator = np.random.default_rng(0)
    inside = 0
    for trial in range(40):
        y = law(-0.2, 2.0, x) * np.exp(generator.normal(0, 0.02, x.size))
        low, high = bootstrap_alpha_interval(x, y, draws=400, seed=trial)
        inside += low <= -0.2 <= high
        assert low < fit_power_law(x, y).alpha < high
    assert inside >= 28  # a 90 % interval from a bootstrap over few points: at least 70 % of 40 trials


def test_a_floor_fit_finds_an_irreducible_loss_that_a_straight_line_misses():
    from nextscale.scaling.fit import fit_with_floor, log_residuals

    n = np.geomspace(1e-4, 1e-2, 8)
    y = 3.0 + law(-0.5, 5e3, n)  # bends towards 3: curved in log-log space
    plain = fit_power_law(n, y)
    residuals = log_residuals(plain, n, y)
    assert residuals[0] > 0 and residuals[len(n) // 2] < 0 and residuals[-1] > 0  # the curvature's signature
    floor = fit_with_floor(n, y)
    assert floor.floor == pytest.approx(3.0, rel=0.01) and floor.alpha == pytest.approx(-0.5, rel=0.02)
    assert floor.rms_log_residual < 0.1 * float(np.sqrt(np.mean(residuals**2)))
    assert fit_with_floor(n, law(-0.2, 2.0, n)).floor < 0.01 * law(-0.2, 2.0, n).min()  # a pure law has none


def test_fits_json_refits_from_runs_json_with_fit_power_law(tmp_path):
    """The records a sweep writes (runs.json) give back the numbers of its fits.json when refitted by hand."""
    from nextscale.scaling.analysis import curves_from_runs, scaling_fits

    runs = []
    for depth, parameters in ((1, 1e5), (2, 4e5), (3, 1.2e6), (4, 2.8e6), (5, 5.4e6)):
        for seed in (0, 1):
            shift = 1 + 0.01 * (seed - 0.5)
            points = [{"step": s, "pflops": s * parameters * 1e-9,
                       **{m: law(a, b, parameters / 1e9) * shift * (1 + 1 / s) for m, (a, b) in PAPER_N_LAWS.items()}}
                      for s in (1, 2, 4, 8)]  # fmt: skip
            runs.append({"name": f"d{depth}-seed{seed}", "parameters": int(parameters), "points": points})
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    fits = scaling_fits(curves_from_runs(json.loads((tmp_path / "runs.json").read_text())))
    for metric in METRICS:
        by_hand = fit_power_law([r["parameters"] / 1e9 for r in runs], [r["points"][-1][metric] for r in runs])
        recorded = fits["against_parameters"][metric]
        assert (recorded["alpha"], recorded["beta"], recorded["pearson_r"]) == pytest.approx(tuple(by_hand))
        assert recorded["points"] == 10 and len(recorded["log_residuals"]) == 10
        low, high = recorded["alpha_interval_90"]
        assert low <= recorded["alpha"] <= high
        frontier = np.array(fits["against_compute"][metric]["xy"])
        refit = fit_power_law(frontier[:, 0], frontier[:, 1])
        assert fits["against_compute"][metric]["alpha"] == pytest.approx(refit.alpha)
