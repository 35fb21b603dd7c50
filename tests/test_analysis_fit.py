"""Scaling-law fits recover known laws from noisy synthetic points; closed forms; isoFLOPs; multipliers."""
import numpy as np
import pytest

from simscale.analysis import optimal, zeroshot
from simscale.analysis.fit_bench import CHINCHILLA, isoflop_design
from simscale.analysis.fit_bench import noisy_loss as noisy
from simscale.analysis.fit import extrapolation, fit_law, huber_objective, lbfgs
from simscale.analysis.laws import APPROACH3, KAPLAN, POWER

@pytest.fixture(scope="module")
def chinchilla_fit():
    x = isoflop_design()
    return fit_law(APPROACH3, x, noisy(APPROACH3, CHINCHILLA, x, 0.01, seed=1), bootstrap=100, seed=0)


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    for law, k in ((APPROACH3, 2), (POWER, 1), (KAPLAN, 1)):
        logx, logl = rng.uniform(14, 22, (40, k)), rng.uniform(0.5, 1.5, 40)
        theta = rng.normal(size=(3, len(law.raw))) + (law.grid[77] if len(law.grid) else 0)
        f, g = huber_objective(law, theta, logx, logl, np.ones(40), delta=0.3)
        for p in range(len(law.raw)):
            step = np.zeros_like(theta)
            step[:, p] = 1e-6
            f2, _ = huber_objective(law, theta + step, logx, logl, np.ones(40), delta=0.3)
            np.testing.assert_allclose((f2 - f) / 1e-6, g[:, p], rtol=1e-3, atol=1e-3)


def test_batched_lbfgs_solves_independent_quadratics():
    centres = np.array([[1.0, -2.0], [3.0, 0.5], [-4.0, 7.0]])
    scale = np.array([1.0, 50.0])

    def fun(x, rows):
        r = x - centres[rows]
        return (scale * r**2).sum(-1), 2 * scale * r

    x, f, _ = lbfgs(fun, np.zeros((3, 2)))
    np.testing.assert_allclose(x, centres, atol=1e-5)


def test_approach3_recovers_chinchilla(chinchilla_fit):
    p = chinchilla_fit.params
    assert chinchilla_fit.n_starts == 4500
    assert p["E"] == pytest.approx(1.69, abs=0.05)
    assert p["alpha"] == pytest.approx(0.34, abs=0.03)
    assert p["beta"] == pytest.approx(0.28, abs=0.03)
    assert p["A"] == pytest.approx(406.4, rel=0.4)
    assert p["B"] == pytest.approx(410.7, rel=0.4)
    assert chinchilla_fit.r2 > 0.99


def test_bootstrap_intervals_cover_truth(chinchilla_fit):
    for k, true in CHINCHILLA.items():
        lo, hi = chinchilla_fit.ci[k]
        assert lo <= true <= hi, (k, lo, hi)
        assert hi > lo
        assert len(chinchilla_fit.boot_params[k]) == 100


@pytest.mark.parametrize("var,alpha,x_c", [("N", 0.076, 8.8e13), ("D", 0.095, 5.4e13)])
def test_kaplan_form_recovers_exponents(var, alpha, x_c):
    x = np.geomspace(1e6, 1e10, 40)[:, None]
    fit = fit_law(KAPLAN, x, noisy(KAPLAN, dict(alpha=alpha, X_c=x_c), x, 0.005, seed=2), (var,),
                  bootstrap=200)
    assert fit.params["alpha"] == pytest.approx(alpha, abs=0.004)
    assert fit.params["X_c"] == pytest.approx(x_c, rel=0.5)
    lo, hi = fit.ci["alpha"]
    assert lo <= alpha <= hi


def test_power_form_recovers_irreducible_loss():
    x = np.geomspace(1e6, 1e11, 40)[:, None]
    truth = dict(E=1.8, A=500.0, alpha=0.35)
    fit = fit_law(POWER, x, noisy(POWER, truth, x, 0.003, seed=3), ("N",))
    assert fit.params["E"] == pytest.approx(1.8, abs=0.05)
    assert fit.params["alpha"] == pytest.approx(0.35, abs=0.03)


def test_extrapolation_to_held_out_largest_models():
    x = isoflop_design(per_budget=12)
    out = extrapolation(APPROACH3, x, noisy(APPROACH3, CHINCHILLA, x, 0.002, seed=4), holdout=3)
    assert out["n_test"] == 3 and out["n_train"] == len(x) - 3
    assert out["mean_abs_rel_error"] < 0.02


def test_too_few_points_is_a_clear_error():
    with pytest.raises(ValueError, match="too few points for the approach3 law.*got 4"):
        fit_law("approach3", np.ones((5, 2)) * [1e6, 1e9], [2.0, 2.1, np.nan, 2.2, 2.3])


def test_closed_form_allocation_matches_hand_computation():
    al = optimal.allocation(CHINCHILLA)
    # a = 0.28 / 0.62, b = 0.34 / 0.62, G = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62) = 1.20157 ** 1.6129
    assert al["a"] == pytest.approx(0.451613, abs=1e-6)
    assert al["b"] == pytest.approx(0.548387, abs=1e-6)
    assert al["G"] == pytest.approx(1.34471, rel=1e-5)
    n, d = optimal.optimal_nd(CHINCHILLA, 5.76e23)  # Gopher's budget: N = G (C/6)^a, D = (C/6)^b / G
    assert n == pytest.approx(3.2190e10, rel=1e-3)
    assert d == pytest.approx(2.9823e12, rel=1e-3)
    # and it is the minimum of the law along C = 6 N D
    grid = np.geomspace(n / 10, n * 10, 20001)
    loss = 406.4 / grid**0.34 + 410.7 / (5.76e23 / 6 / grid) ** 0.28
    assert grid[np.argmin(loss)] == pytest.approx(n, rel=1e-3)
    assert optimal.frontier_loss(CHINCHILLA, 5.76e23) == pytest.approx(1.69 + loss.min(), rel=1e-9)


def test_a_vanishing_term_has_no_compute_optimal_allocation():
    """A fit with A = 0 (seen: vpnls on the cpu demo's runs, where every run has the same D) puts
    the optimum at N -> 0; it must be refused, not divided by (the report crashed)."""
    with pytest.raises(ValueError, match="needs A > 0 and B > 0"):
        optimal.allocation(dict(CHINCHILLA, A=0.0))
    with pytest.raises(ValueError, match="not finite"):
        optimal.allocation(dict(CHINCHILLA, A=1e300, alpha=1e-3, beta=1e-3))


def test_isoflop_parabolas_find_the_optimum():
    budgets = np.logspace(18, 22, 5)
    x = isoflop_design(budgets, per_budget=15, spread=8.0)
    loss = noisy(APPROACH3, CHINCHILLA, x, 0.002, seed=0)
    c = 6 * x[:, 0] * x[:, 1]
    labels = optimal.group_budgets(c)
    assert len(np.unique(labels)) == 5
    profiles = [dict(C=c[labels == g].mean(), N=x[labels == g, 0], loss=loss[labels == g]) for g in range(5)]
    out = optimal.isoflop(profiles)
    n_true = optimal.optimal_nd(CHINCHILLA, budgets)[0]
    np.testing.assert_allclose([m["N_opt"] for m in out["minima"]], n_true, rtol=0.15)
    assert out["a"] == pytest.approx(0.4516, abs=0.02)
    assert out["a"] + out["b"] == pytest.approx(1.0)
    assert out["a_ci"][0] < out["a"] < out["a_ci"][1]


def test_isoflop_needs_three_sizes_and_budgets():
    with pytest.raises(ValueError, match="3 distinct model sizes"):
        optimal.parabola_min([1e6, 1e7], [3.0, 2.9])
    out = optimal.isoflop([dict(C=1e18, N=[1e6, 1e7], loss=[3.0, 2.9]),
                           dict(C=1e19, N=[1e6, 1e7, 1e8], loss=[3.0, 2.9, 2.85])])
    assert out["error"].startswith("approach 2 needs parabola minima at 3 or more compute budgets, got 0")
    assert "C=1e+18: an isoFLOP parabola needs at least 3 distinct model sizes" in out["error"]
    assert "C=1e+19: parabola minimum outside the sampled model sizes" in out["error"]
    assert "a" not in out


def test_size_multiplier_on_synthetic_accuracy_curves():
    n_ref = np.geomspace(1e6, 2e8, 8)
    acc = lambda n: 0.3 + 0.04 * np.log(n / 1e6)  # noqa: E731
    n_simpl = np.geomspace(1e6, 2e7, 5)
    mult = zeroshot.size_multipliers(n_ref, acc(n_ref), n_simpl, acc(6 * n_simpl))
    np.testing.assert_allclose(mult, 6.0, rtol=1e-6)
    # out of the reference curve's range: no match
    assert np.isnan(zeroshot.size_multipliers(n_ref, acc(n_ref), [1e9], [acc(1e10)])[0])
