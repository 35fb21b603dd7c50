"""Point sets the fits use, built from runs: finals, learning-curve points, isoFLOP profiles.

Learning-curve points (eval loss at intermediate token counts) stand in when a
sweep trains every shape on one budget (the paper's grid): they are honest
measurements, but under a cosine schedule an intermediate point is not the loss
a run tuned to that budget would reach, so fits on them lean pessimistic.
"""
from __future__ import annotations

import numpy as np

from simscale.analysis.collect import Run
from simscale.analysis.optimal import group_budgets

CURVE_START = 0.25  # learning-curve points before this fraction of a run's tokens are dropped


def finals(runs: list[Run], convention=None) -> dict[str, np.ndarray]:
    """N, D, C, loss of finished runs."""
    return dict(
        N=np.array([r.N for r in runs]), D=np.array([r.D for r in runs]),
        C=np.array([r.C(convention) for r in runs]), loss=np.array([r.loss for r in runs]),
    )


def flops_per_param_token(runs: list[Run], convention=None) -> float:
    """k in C = k N D under `convention`, the median over runs (6 when FLOPs are unknown)."""
    k = np.array([r.C(convention) / (r.N * r.D) for r in runs])
    k = k[np.isfinite(k) & (k > 0)]
    return float(np.median(k)) if len(k) else 6.0


def curve_points(runs: list[Run], convention=None, start: float = CURVE_START) -> dict[str, np.ndarray]:
    """Eval-loss points along each run's learning curve after `start` of its tokens."""
    cols = {k: [] for k in ("N", "D", "C", "loss")}
    for r in runs:
        keep = r.eval_tokens_t >= start * r.D
        t, loss = r.eval_tokens_t[keep], r.eval_loss_t[keep]
        cols["N"].append(np.full(len(t), r.N))
        cols["D"].append(t)
        cols["C"].append(t * r.C(convention) / r.D)
        cols["loss"].append(loss)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}


def envelope(C, loss, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Lowest loss per log-spaced compute bin: the empirical compute frontier."""
    ok = np.isfinite(C) & np.isfinite(loss) & (C > 0)
    C, loss = np.asarray(C)[ok], np.asarray(loss)[ok]
    if len(C) == 0:
        return C, loss
    edges = np.linspace(np.log(C.min()), np.log(C.max()) + 1e-9, bins + 1)
    which = np.digitize(np.log(C), edges) - 1
    pick = [np.flatnonzero(which == b)[np.argmin(loss[which == b])] for b in range(bins) if np.any(which == b)]
    return C[pick], loss[pick]


def isoflop_profiles(runs: list[Run], convention=None, levels: int = 6) -> tuple[list[dict], str]:
    """Loss against N at fixed compute: budget groups of final runs, else learning curves.

    Returns (profiles [{C, N, loss}], source). Final runs form profiles when at least
    three budgets have three or more model sizes; otherwise each run's eval curve is
    interpolated (in log C) at `levels` log-spaced budgets inside the shared range.
    """
    f = finals(runs, convention)
    profiles = []
    if len(runs):
        labels = group_budgets(f["C"])
        for g in np.unique(labels):
            sel = labels == g
            if len(np.unique(f["N"][sel])) >= 3:
                profiles.append(dict(C=float(np.exp(np.log(f["C"][sel]).mean())), N=f["N"][sel], loss=f["loss"][sel]))
    if len(profiles) >= 3:
        return profiles, "final"
    curves = [(r.N, r.eval_tokens_t * r.C(convention) / r.D, r.eval_loss_t) for r in runs if len(r.eval_tokens_t) >= 2]
    curves = [(n, c, l) for n, c, l in curves if np.all(np.isfinite(c))]
    if len(curves) < 3:
        return [], "curves"
    lo = np.quantile([c[0] for _, c, _ in curves], 0.5)  # budgets most runs have passed through
    hi = np.quantile([c[-1] for _, c, _ in curves], 0.5)
    profiles = []
    for level in np.geomspace(lo, hi, levels) if hi > lo else []:
        inside = [(n, np.exp(np.interp(np.log(level), np.log(c), np.log(l)))) for n, c, l in curves if c[0] <= level <= c[-1]]
        if len(inside) >= 3:
            profiles.append(dict(C=float(level), N=np.array([n for n, _ in inside]), loss=np.array([v for _, v in inside])))
    return profiles, "curves"
