"""Zero-shot accuracy against scale and the effective size multiplier, with intervals.

The multiplier answers: how many times more parameters does a model on the
reference data (unrestricted) need to match this model's (simplified) score?
Accuracy against log N on the reference data is made monotone by weighted
isotonic regression (pool adjacent violators, weights 1 / variance of each
model's mean accuracy), then inverted by linear interpolation in log N. A score
below the reference curve's lowest fitted value matches a model smaller than the
smallest reference one: the multiplier is an upper bound (`< N_min / N`); above
its highest value, a lower bound (`> N_max / N`). Bounds are kept and counted,
never dropped; they enter medians and percentiles as -inf / +inf.

Intervals: eval.json records hold per-task accuracy and example count, not
per-example outcomes, so the bootstrap is parametric: each model's correct count
on each task is drawn as Binomial(n, acc), and the whole chain (means, isotonic
fit, inversion, median) is redone per draw.
"""
from __future__ import annotations

import numpy as np

BELOW, INSIDE, ABOVE = -1, 0, 1


def isotonic(y, w) -> np.ndarray:
    """Weighted least-squares non-decreasing fit to y (already ordered by x): pool adjacent violators."""
    vals, wts, counts = [], [], []
    for yi, wi in zip(np.asarray(y, float), np.asarray(w, float)):
        vals.append(yi), wts.append(wi), counts.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v, wt, c = vals.pop(), wts.pop(), counts.pop()
            total = wts[-1] + wt
            vals[-1] = (vals[-1] * wts[-1] + v * wt) / total
            wts[-1], counts[-1] = total, counts[-1] + c
    return np.repeat(vals, counts)


def invert(logn_k, fit_k, score: float) -> tuple[float, int]:
    """Smallest log N where the non-decreasing curve (logn_k, fit_k) reaches `score`, and whether
    the score lies BELOW (match smaller than the smallest N), INSIDE, or ABOVE the curve."""
    if score <= fit_k[0]:
        return float(logn_k[0]), BELOW
    if score > fit_k[-1]:
        return float(logn_k[-1]), ABOVE
    i = int(np.argmax(fit_k >= score))  # first index reaching the score; fit_k[i - 1] < score
    t = (score - fit_k[i - 1]) / (fit_k[i] - fit_k[i - 1])
    return float(logn_k[i - 1] + t * (logn_k[i] - logn_k[i - 1])), INSIDE


def log_multipliers(N_ref, score_ref, var_ref, N, scores) -> tuple[np.ndarray, np.ndarray]:
    """log(N_u / N) per model (-inf / +inf for bounds) and the side of each (BELOW, INSIDE, ABOVE);
    the value of a bound (log of N_min / N or N_max / N) is given by `bound_values`."""
    order = np.argsort(N_ref)
    logn = np.log(np.asarray(N_ref, float)[order])
    weights = 1.0 / np.maximum(np.asarray(var_ref, float)[order], 1e-12)
    fit = isotonic(np.asarray(score_ref, float)[order], weights)
    out, side = np.empty(len(scores)), np.empty(len(scores), int)
    for i, (n, s) in enumerate(zip(N, scores)):
        logu, side[i] = invert(logn, fit, s)
        out[i] = logu - np.log(n) if side[i] == INSIDE else side[i] * np.inf
    return out, side


def bound_values(N_ref, N, side) -> np.ndarray:
    """The multiplier each bound states: N_min / N below the grid, N_max / N above it (nan inside)."""
    edge = np.where(np.asarray(side) == BELOW, np.min(N_ref), np.max(N_ref))
    return np.where(np.asarray(side) == INSIDE, np.nan, edge / np.asarray(N, float))


def binomial_means(acc_mT, n_mT, draws: int, rng) -> np.ndarray:
    """(draws, m) mean accuracy over T tasks with each task's correct count ~ Binomial(n, acc)."""
    acc, n = np.clip(np.asarray(acc_mT, float), 0, 1), np.asarray(n_mT, int)
    return (rng.binomial(n, acc, size=(draws,) + acc.shape) / n).mean(-1)


def mean_variance(acc_mT, n_mT) -> np.ndarray:
    """Variance of each model's mean accuracy over its tasks (binomial per task)."""
    acc, n = np.asarray(acc_mT, float), np.asarray(n_mT, float)
    return (acc * (1 - acc) / n).sum(-1) / acc.shape[-1] ** 2


def _quantiles(v, level):
    """Percentile interval without interpolation (values may be infinite). A nan (a median between a
    bound below and one above the grid) counts as -inf for the lower end and +inf for the upper."""
    tail = (1 - level) / 2
    v = np.asarray(v, float)
    return np.stack([np.quantile(np.where(np.isnan(v), -np.inf, v), tail, method="inverted_cdf", axis=0),
                     np.quantile(np.where(np.isnan(v), np.inf, v), 1 - tail, method="inverted_cdf", axis=0)])


def size_multiplier(N_ref, acc_ref_mT, n_ref_mT, N, acc_mT, n_mT, draws: int = 1000, level: float = 0.95,
                    seed: int = 0) -> dict:
    """Per-model multipliers and their median over models, each with a parametric-bootstrap interval.

    acc_*_mT, n_*_mT: per model (m) and task (T) accuracy and example count (same tasks everywhere).
    Interval ends are None where they fall outside the reference grid (below / above).
    """
    acc_ref, n_ref, acc, n = (np.asarray(a, float) for a in (acc_ref_mT, n_ref_mT, acc_mT, n_mT))
    var_ref = mean_variance(acc_ref, n_ref)
    logm, side = log_multipliers(N_ref, acc_ref.mean(-1), var_ref, N, acc.mean(-1))
    rng = np.random.default_rng(seed)
    ref_b, q_b = binomial_means(acc_ref, n_ref, draws, rng), binomial_means(acc, n, draws, rng)
    boot = np.array([log_multipliers(N_ref, r, var_ref, N, q)[0] for r, q in zip(ref_b, q_b)])
    with np.errstate(invalid="ignore"):  # -inf and +inf in the middle pair: nan, handled by _quantiles
        medians = np.median(boot, axis=1)
    per_ci, med_ci = _quantiles(boot, level), _quantiles(medians, level)
    bounds = bound_values(N_ref, N, side)
    per_model = [dict(N=float(N[i]), score=float(acc[i].mean()), multiplier=_exp(logm[i]),
                      bound={BELOW: "<", INSIDE: None, ABOVE: ">"}[side[i]],
                      bound_value=None if side[i] == INSIDE else float(bounds[i]),
                      ci=[_exp(per_ci[0, i]), _exp(per_ci[1, i])]) for i in range(len(N))]
    with np.errstate(invalid="ignore"):
        median = float(np.median(logm))
    return dict(per_model=per_model, n=len(N), n_below=int(np.sum(side == BELOW)),
                n_above=int(np.sum(side == ABOVE)), median=_exp(median),
                median_side=int(np.sign(median)) if np.isinf(median) else INSIDE,  # nan median: 0, value None
                ci=[_exp(med_ci[0]), _exp(med_ci[1])], ci_level=level, draws=draws,
                grid=[float(np.min(N_ref) / np.max(N)), float(np.max(N_ref) / np.min(N))],
                bootstrap="parametric: Binomial(n, acc) per model and task")


def _exp(log_value: float) -> float | None:
    return float(np.exp(log_value)) if np.isfinite(log_value) else None


def describe(m: dict) -> str:
    """The median multiplier with its interval, a bound, or 'not determined' when the interval spans the
    grid (from the smallest to the largest multiplier the reference sizes can express)."""
    lo, hi = m["ci"]
    if (lo is None or lo <= m["grid"][0]) and (hi is None or hi >= m["grid"][1]):
        return "not determined (the interval spans the whole model grid)"
    if m["median"] is None:
        return f"{'above' if m['median_side'] > 0 else 'below'} the model grid ({_interval(lo, hi)})"
    return f"{m['median']:.2f}x [{_interval(lo, hi)}]"


def _interval(lo, hi) -> str:
    left = f"{lo:.2f}x" if lo is not None else "below grid"
    right = f"{hi:.2f}x" if hi is not None else "above grid"
    return f"{left}, {right}"


def matching_size(N_ref, score_ref, score: float) -> float:
    """N on the monotone (isotonic, unweighted) reference curve reaching `score`; nan outside it."""
    order = np.argsort(N_ref)
    logn = np.log(np.asarray(N_ref, float)[order])
    fit = isotonic(np.asarray(score_ref, float)[order], np.ones(len(logn)))
    logu, side = invert(logn, fit, score)
    return float(np.exp(logu)) if side == INSIDE else float("nan")


def size_multipliers(N_ref, score_ref, N, scores) -> np.ndarray:
    """N_ref needed to match each (N, score), divided by N; nan where the match is outside the grid."""
    return np.array([matching_size(N_ref, score_ref, s) / n for n, s in zip(N, scores)], dtype=np.float64)
