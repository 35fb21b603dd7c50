"""The effective size multiplier: monotone reference curve, bounds kept, intervals; suite task sets."""
import numpy as np
import pytest

from simscale.analysis import zeroshot


def curve(n):
    """True mean accuracy: a logistic in log N from chance (0.5) towards 0.9."""
    return 0.5 + 0.4 / (1 + np.exp(-(np.log(n) - np.log(5e6))))


def test_isotonic_matches_hand_pooling():
    # y = 1, 3, 2, 4: the violating pair (3, 2) pools to 2.5; weighted 1:3 it pools to 2.25
    np.testing.assert_allclose(zeroshot.isotonic([1, 3, 2, 4], [1, 1, 1, 1]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(zeroshot.isotonic([1, 3, 2, 4], [1, 1, 3, 1]), [1, 2.25, 2.25, 4])
    np.testing.assert_allclose(zeroshot.isotonic([3, 2, 1], [1, 1, 1]), [2, 2, 2])


def test_inversion_of_a_flat_stretch_takes_its_start():
    logn, fit = np.log([1e6, 1e7, 1e8, 1e9]), np.array([1.0, 2.5, 2.5, 4.0])
    assert zeroshot.invert(logn, fit, 2.5) == (pytest.approx(np.log(1e7)), zeroshot.INSIDE)
    assert zeroshot.invert(logn, fit, 1.75) == (pytest.approx(np.log(np.sqrt(1e6 * 1e7))), zeroshot.INSIDE)
    assert zeroshot.invert(logn, fit, 0.5)[1] == zeroshot.BELOW
    assert zeroshot.invert(logn, fit, 4.5)[1] == zeroshot.ABOVE


def noisy_models(N, true_acc, tasks=5, n=400, seed=0):
    """Per-task measured accuracies (Binomial(n, acc) / n) around true mean accuracies."""
    rng = np.random.default_rng(seed)
    offsets = np.linspace(-0.04, 0.04, tasks)
    acc = np.clip(true_acc[:, None] + offsets, 0, 1)
    return rng.binomial(n, acc) / n, np.full(acc.shape, n)


def test_multiplier_on_noisy_non_monotone_curves_keeps_bounds():
    """Simplified-data models worth 6x their size; sampling noise makes the measured reference
    curve non-monotone (seeded so that it is)."""
    n_ref = np.geomspace(1e6, 3.2e7, 10)
    acc_ref, cnt_ref = noisy_models(n_ref, curve(n_ref), n=200, seed=2)
    assert np.any(np.diff(acc_ref.mean(1)) < 0)
    n_s = np.array([1e5, 1.5e6, 3e6, 5e6])  # the first: 6 x 1e5 is below the smallest reference model
    acc_s, cnt_s = noisy_models(n_s, curve(6 * n_s), n=200, seed=102)
    m = zeroshot.size_multiplier(n_ref, acc_ref, cnt_ref, n_s, acc_s, cnt_s, draws=400, seed=0)
    assert m["n"] == 4 and m["n_below"] == 1 and m["n_above"] == 0
    first = m["per_model"][0]
    assert first["bound"] == "<" and first["multiplier"] is None
    assert first["bound_value"] == pytest.approx(10.0)  # N_min / N = 1e6 / 1e5
    lo, hi = m["ci"]
    assert lo is not None and lo <= 6.0 and (hi is None or hi >= 6.0), m["ci"]
    assert 3.0 < m["median"] < 12.0
    assert all(None in p["ci"] or p["ci"][0] <= p["ci"][1] for p in m["per_model"])
    assert zeroshot.describe(m).startswith(f"{m['median']:.2f}x [")


def test_multiplier_near_chance_is_not_determined():
    n_ref = np.geomspace(1e6, 3.2e7, 6)
    flat = np.full(6, 0.5)
    acc_ref, cnt_ref = noisy_models(n_ref, flat, n=200, seed=3)
    acc_s, cnt_s = noisy_models(n_ref[:4], flat[:4], n=200, seed=4)
    m = zeroshot.size_multiplier(n_ref, acc_ref, cnt_ref, n_ref[:4], acc_s, cnt_s, draws=400, seed=0)
    assert zeroshot.describe(m).startswith("not determined"), m["ci"]
