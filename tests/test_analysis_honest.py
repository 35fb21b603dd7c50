"""Honest statistics (issue #12): out-of-sample extrapolation, run-level bootstrap, point counts.

Expected values come from the synthetic truth the data were drawn from, never from the fits.
"""
import numpy as np
import pytest

from simscale.analysis import fit as F
from simscale.analysis.fit import extrapolation, fit_law
from simscale.analysis.laws import APPROACH3, POWER, raw_from_natural

TRUTH = dict(E=1.8, A=300.0, B=400.0, alpha=0.35, beta=0.3)


def law_loss(x_nK):
    return APPROACH3.predict(raw_from_natural(APPROACH3, **TRUTH), x_nK)


def unidentified_design():
    """Three model sizes, eight token counts each: without the largest size only two sizes remain,
    which cannot separate E from A / N^alpha (any E' < E has an exact A', alpha' through both)."""
    x = np.array([(n, d) for n in (1e6, 1e7, 1e9) for d in np.geomspace(1e8, 1e10, 8)])
    return x, law_loss(x) * np.exp(np.random.default_rng(0).normal(0, 0.002, len(x)))


def test_extrapolation_is_out_of_sample():
    x, loss = unidentified_design()
    held_out = x[:, 0] == 1e9
    honest = extrapolation(APPROACH3, x, loss)
    leaky = extrapolation(APPROACH3, x, loss, starts=fit_law(APPROACH3, x, loss).theta)  # the old check
    assert honest["n_starts"] == 4500 and honest["n_test"] == 8 and honest["n_train"] == 16
    # The leaky refit stays at the optimum fitted with the held-out points and looks excellent.
    assert leaky["mean_abs_error"] < 0.01
    assert honest["mean_abs_error"] > 20 * leaky["mean_abs_error"]
    # Out of sample: the honest prediction does not depend on the held-out losses at all ...
    shifted = loss * np.where(held_out, 1.1, 1.0)
    assert extrapolation(APPROACH3, x, shifted)["params"] == honest["params"]
    # ... while the leaky one follows them.
    leaky_shifted = extrapolation(APPROACH3, x, shifted, starts=fit_law(APPROACH3, x, shifted).theta)
    assert leaky_shifted["params"]["alpha"] != pytest.approx(leaky["params"]["alpha"], abs=1e-3)


def test_extrapolation_errors_in_nats_and_relative():
    x, loss = unidentified_design()
    out = extrapolation(APPROACH3, x, loss)
    train = ~(x[:, 0] == 1e9)
    assert out["mean_abs_rel_error"] == pytest.approx(out["mean_abs_error"] / loss[~train].mean(), rel=0.05)
    assert out["error_over_train_sd"] == pytest.approx(out["mean_abs_error"] / loss[train].std())


def run_design():
    """Ten runs (5 sizes x 2 budgets), 4 learning-curve points each."""
    runs = [(n, d) for n in np.geomspace(2e6, 2e8, 5) for d in (2e9, 2e10)]
    x = np.array([(n, d * f) for n, d in runs for f in np.linspace(0.15, 1, 4)])
    return x, np.repeat(np.arange(len(runs)), 4)


def coverage(groups_n, x, logl_Rn, best_RP, resamples, level=0.95):
    """Fraction of replicates whose percentile intervals of alpha and beta contain the truth."""
    R = len(logl_Rn)
    W = np.concatenate([F.run_weights(groups_n, resamples, seed=r) for r in range(R)])
    theta = F.bootstrap_optima(APPROACH3, np.log(x), np.repeat(logl_Rn, resamples, 0), W,
                               np.repeat(best_RP[:, None], resamples, 0)).reshape(R, resamples, -1)
    tail = 100 * (1 - level) / 2
    out = {}
    for i, name in ((3, "alpha"), (4, "beta")):
        lo, hi = np.percentile(theta[:, :, i], [tail, 100 - tail], axis=1)
        out[name] = float(np.mean((lo <= TRUTH[name]) & (TRUTH[name] <= hi)))
    return out


def test_run_bootstrap_covers_the_truth_where_point_bootstrap_does_not():
    """100 seeded replicates of ten runs from a known law, with a per-run offset (2% of the loss,
    shared by all points of a run) and 0.3% point noise; all replicates are fitted as one batch."""
    x, run_n = run_design()
    R, resamples = 100, 60
    rng = np.random.default_rng(0)
    logl_Rn = (np.log(law_loss(x)) + rng.normal(0, 0.02, (R, run_n.max() + 1))[:, run_n]
               + rng.normal(0, 0.003, (R, len(x))))
    starts = np.array([[a, b, e, al, be] for a in (4, 8) for b in (4, 8) for e in (0.0, 0.5)
                       for al, be in ((0.2, 0.2), (0.5, 0.5))])
    S = len(starts)
    theta, _, problem, _ = F.multistart(APPROACH3, np.log(x), np.repeat(logl_Rn, S, 0), np.ones(len(x)),
                                        np.tile(starts, (R, 1)), np.repeat(np.arange(R), S), polish=2)
    best = theta[np.unique(problem, return_index=True)[1]]
    runs = coverage(run_n, x, logl_Rn, best, resamples)
    points = coverage(np.arange(len(x)), x, logl_Rn, best, resamples)
    assert runs["alpha"] >= 0.85 and runs["beta"] >= 0.85, runs
    assert points["alpha"] <= runs["alpha"] - 0.15, (points, runs)


def test_fit_law_bootstraps_runs_and_records_counts():
    x, run_n = run_design()
    loss = law_loss(x) * np.exp(np.random.default_rng(1).normal(0, 0.02, run_n.max() + 1)[run_n])
    fit = fit_law(APPROACH3, x, loss, bootstrap=20, groups=run_n)
    rec = fit.to_json()
    assert rec["n_points"] == 40 and rec["n_runs"] == 10 and rec["bootstrap_unit"] == "runs"
    assert 1 <= len(fit.optima) <= F.BOOT_STARTS
    assert len(fit.boot_params["alpha"]) == 20
    assert fit_law(APPROACH3, x, loss).to_json()["bootstrap_unit"] == "points"


def test_run_weights_move_whole_runs():
    groups = np.array([5, 5, 5, 9, 9, 2])
    W = F.run_weights(groups, 50, seed=0)
    assert W.shape == (50, 6)
    np.testing.assert_array_equal(W[:, 0], W[:, 2])  # a run's points share its count
    np.testing.assert_array_equal(W[:, 3], W[:, 4])
    np.testing.assert_array_equal(W[:, [0, 3, 5]].sum(1), 3)  # three runs drawn per resample


def test_fewer_points_than_parameters_plus_two_is_refused():
    x = np.geomspace(1e6, 1e9, 4)[:, None]
    loss = POWER.predict(raw_from_natural(POWER, E=1.8, A=300.0, alpha=0.3), x)
    with pytest.raises(ValueError, match=r"power law in N: a fit of 3 parameters needs at least 5 points "
                                         r"\(parameters \+ 2\).*got 4 \(of 4\)"):
        fit_law(POWER, x, loss, ("N",))
    with pytest.raises(ValueError, match="groups has 3 entries for 4 points"):
        fit_law(POWER, x, loss, ("N",), groups=[0, 1, 2])
