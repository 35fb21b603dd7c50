"""Point sets the fits use, built from runs: finals, learning-curve points, isoFLOP profiles.

Every point set carries `run`, the index of the run each point comes from, so that
bootstraps can resample whole runs.

Learning-curve points (eval loss at intermediate token counts) stand in when a
sweep trains every shape on one budget (the paper's grid): they are honest
measurements, but under a cosine schedule an intermediate point is not the loss
a run tuned to that budget would reach, so fits on them lean pessimistic.
"""
from __future__ import annotations

import numpy as np

from simscale.analysis.collect import RunResult
from simscale.analysis.optimal import group_budgets

CURVE_START = 0.1  # learning-curve points within the warmup or this fraction of a run's tokens are dropped
# (Choshen et al. 2024, "A Hitchhiker's Guide to Scaling Law Estimation")


def finals(runs: list[RunResult], convention=None) -> dict[str, np.ndarray]:
    """N, D, C, loss of finished runs (and `run`, their index)."""
    return dict(
        N=np.array([r.N for r in runs]), D=np.array([r.D for r in runs]),
        C=np.array([r.C(convention) for r in runs]), loss=np.array([r.loss for r in runs]),
        run=np.arange(len(runs)),
    )


def flops_per_param_token(runs: list[RunResult], convention=None) -> float:
    """k in C = k N D under `convention`, the median over runs (6 when FLOPs are unknown)."""
    k = np.array([r.C(convention) / (r.N * r.D) for r in runs])
    k = k[np.isfinite(k) & (k > 0)]
    return float(np.median(k)) if len(k) else 6.0


def curve_start(run: RunResult, start: float = CURVE_START) -> float:
    """Token count up to which a run's learning curve is left out: its warmup or `start` of its tokens."""
    return max(run.warmup_tokens, start * run.D)


def curve_points(runs: list[RunResult], convention=None, start: float = CURVE_START) -> dict[str, np.ndarray]:
    """Eval-loss points along each run's learning curve past its warmup and `start` of its tokens."""
    cols = {k: [] for k in ("N", "D", "C", "loss", "run")}
    for i, r in enumerate(runs):
        keep = r.eval_tokens_t > curve_start(r, start)
        t, loss = r.eval_tokens_t[keep], r.eval_loss_t[keep]
        cols["N"].append(np.full(len(t), r.N))
        cols["D"].append(t)
        cols["C"].append(t * r.C(convention) / r.D)
        cols["loss"].append(loss)
        cols["run"].append(np.full(len(t), i))
    return {k: np.concatenate(v) if v else np.zeros(0, int if k == "run" else float) for k, v in cols.items()}


def envelope_index(X, loss, bins: int = 20) -> np.ndarray:
    """Indices of the lowest loss per log-spaced bin of X (compute or tokens): the empirical frontier."""
    X, loss = np.asarray(X, float), np.asarray(loss, float)
    ok = np.flatnonzero(np.isfinite(X) & np.isfinite(loss) & (X > 0))
    if len(ok) == 0:
        return ok
    logx = np.log(X[ok])
    edges = np.linspace(logx.min(), logx.max() + 1e-9, bins + 1)
    which = np.digitize(logx, edges) - 1
    return np.array([ok[which == b][np.argmin(loss[ok][which == b])] for b in range(bins)
                     if np.any(which == b)])


def envelope(C, loss, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Lowest loss per log-spaced compute bin: the empirical compute frontier."""
    pick = envelope_index(C, loss, bins)
    return np.asarray(C, float)[pick], np.asarray(loss, float)[pick]


def isoflop_profiles(runs: list[RunResult], convention=None, levels: int = 6) -> tuple[list[dict], str]:
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
                stderr = np.array([runs[i].loss_stderr for i in np.flatnonzero(sel)])
                profiles.append(dict(C=float(np.exp(np.log(f["C"][sel]).mean())), N=f["N"][sel],
                                     loss=f["loss"][sel], stderr=stderr))
    if len(profiles) >= 3:
        return profiles, "final"
    curves = [(r.N, r.eval_tokens_t * r.C(convention) / r.D, r.eval_loss_t, r.eval_stderr_t) for r in runs
              if len(r.eval_tokens_t) >= 2]
    curves = [cv for cv in curves if np.all(np.isfinite(cv[1]))]
    if len(curves) < 3:
        return [], "curves"
    lo = np.quantile([cv[1][0] for cv in curves], 0.5)  # budgets most runs have passed through
    hi = np.quantile([cv[1][-1] for cv in curves], 0.5)
    profiles = []
    for level in np.geomspace(lo, hi, levels) if hi > lo else []:
        at = np.log(level)
        inside = [(n, np.exp(np.interp(at, np.log(c), np.log(losses))), np.interp(at, np.log(c), se))
                  for n, c, losses, se in curves if c[0] <= level <= c[-1]]
        if len(inside) >= 3:
            n, loss, se = (np.array(col) for col in zip(*inside))
            profiles.append(dict(C=float(level), N=n, loss=loss, stderr=se))
    return profiles, "curves"
