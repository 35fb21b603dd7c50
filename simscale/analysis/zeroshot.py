"""Zero-shot accuracy against scale and the effective size multiplier.

The multiplier answers: how many times more parameters does a model on the
reference data (unrestricted) need to match this model's (simplified) score?
The reference curve is interpolated linearly in log N between its models.
"""
from __future__ import annotations

import numpy as np


def matching_size(N_ref, score_ref, score: float) -> float:
    """Smallest N on the reference curve reaching `score` (log-N interpolation); nan if it never does."""
    order = np.argsort(N_ref)
    logn, s = np.log(np.asarray(N_ref, float)[order]), np.asarray(score_ref, float)[order]
    if len(s) == 0 or not np.isfinite(score):
        return float("nan")
    if s[0] >= score:
        return float(np.exp(logn[0])) if s[0] == score else float("nan")  # already better below range
    for i in range(1, len(s)):
        if s[i] >= score:
            t = (score - s[i - 1]) / (s[i] - s[i - 1])
            return float(np.exp(logn[i - 1] + t * (logn[i] - logn[i - 1])))
    return float("nan")


def size_multipliers(N_ref, score_ref, N, scores) -> np.ndarray:
    """N_ref needed to match each (N, score), divided by N; nan where the reference curve has no match."""
    return np.array([matching_size(N_ref, score_ref, s) / n for n, s in zip(N, scores)], dtype=np.float64)


def summarise_multipliers(mult) -> dict:
    """Geometric mean and range of the finite multipliers."""
    m = np.asarray(mult, float)
    m = m[np.isfinite(m) & (m > 0)]
    if len(m) == 0:
        return dict(n=0, geomean=None, min=None, max=None)
    return dict(n=int(len(m)), geomean=float(np.exp(np.log(m).mean())), min=float(m.min()), max=float(m.max()))
