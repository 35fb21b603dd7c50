"""Compute-optimal allocation: approach 3's closed form and approach 2's isoFLOP parabolas.

Compute is C = k N D (k = 6 for the usual 6ND count; pass the k measured from
the runs' FLOP convention). Minimising E + A/N^alpha + B/D^beta along C = k N D:

    N_opt = G (C/k)^a',  D_opt = G^-1 (C/k)^b',
    a' = beta / (alpha + beta),  b' = alpha / (alpha + beta),
    G = (alpha A / (beta B))^(1 / (alpha + beta)).
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def allocation(params: dict) -> dict:
    """Exponents a', b' and the constant G of the compute-optimal allocation."""
    alpha, beta, A, B = params["alpha"], params["beta"], params["A"], params["B"]
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"compute-optimal allocation needs alpha > 0 and beta > 0, got {alpha:.3g}, "
                         f"{beta:.3g}")
    if not (A > 0 and B > 0):  # a vanishing term leaves the optimum at N or D -> 0 or infinity
        raise ValueError(f"compute-optimal allocation needs A > 0 and B > 0, got {A:.3g}, {B:.3g}")
    with np.errstate(over="ignore"):
        G = float(np.power(np.float64(alpha * A / (beta * B)), 1 / (alpha + beta)))
    if not 0 < G < np.inf:
        raise ValueError(f"compute-optimal allocation is not finite: G = {G:.3g} (alpha {alpha:.3g}, "
                         f"beta {beta:.3g})")
    return dict(a=beta / (alpha + beta), b=alpha / (alpha + beta), G=G)


def optimal_nd(params: dict, C, k: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) at compute C = k N D."""
    al = allocation(params)
    c = np.asarray(C, dtype=np.float64) / k
    return al["G"] * c ** al["a"], c ** al["b"] / al["G"]


def frontier_loss(params: dict, C, k: float = 6.0) -> np.ndarray:
    """Loss of the compute-optimal model at compute C: the fitted frontier."""
    n, d = optimal_nd(params, C, k)
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def group_budgets(C, rel_gap: float = 1.3) -> np.ndarray:
    """Label points by compute budget: sorted C values more than rel_gap apart start a new group."""
    C = np.asarray(C, dtype=np.float64)
    order = np.argsort(C)
    labels = np.empty(len(C), dtype=int)
    labels[order] = (np.concatenate([[0], np.cumsum(np.diff(np.log(C[order])) > np.log(rel_gap))])
                     if len(C) else [])
    return labels


def parabola_min(N, loss) -> dict:
    """Fit loss = p0 (log N)^2 + p1 log N + p2 and return its minimum (needs 3 distinct N, upward
    curvature)."""
    x, y = np.log(np.asarray(N, float)), np.asarray(loss, float)
    if len(np.unique(x)) < 3:
        raise ValueError(f"an isoFLOP parabola needs at least 3 distinct model sizes, "
                         f"got {len(np.unique(x))}")
    p = np.polyfit(x, y, 2)
    if p[0] <= 0:
        raise ValueError("isoFLOP profile is not convex (no interior minimum): widen the range of model "
                         "sizes")
    x_min = -p[1] / (2 * p[0])
    return dict(N_opt=float(np.exp(x_min)), loss_min=float(np.polyval(p, x_min)), coeffs=p.tolist(),
                interior=bool(x.min() <= x_min <= x.max()))


def isoflop(profiles: list[dict], k: float = 6.0, level: float = 0.95) -> dict:
    """Approach 2: parabola minima per budget, then N_opt ∝ C^a and D_opt ∝ C^b.

    profiles: [{C, N (array), loss (array)}]. D_opt = C / (k N_opt). Intervals on the
    exponents are t-intervals of the log-log regression slope (a + b = 1 by construction).
    `parabolas` holds every fitted profile; only minima inside the sampled sizes enter the
    regression, the rest are listed under `skipped` with the reason. With fewer than three
    such minima the result carries `error` instead of exponents.
    """
    parabolas, skipped = [], []
    for prof in profiles:
        try:
            m = parabola_min(prof["N"], prof["loss"])
        except ValueError as e:
            skipped.append(dict(C=float(prof["C"]), reason=str(e)))
            continue
        parabolas.append(dict(C=float(prof["C"]), D_opt=float(prof["C"] / (k * m["N_opt"])), **m))
        if not m["interior"]:
            skipped.append(dict(C=float(prof["C"]),
                                reason="parabola minimum outside the sampled model sizes"))
    minima = [p for p in parabolas if p["interior"]]
    out = dict(parabolas=parabolas, minima=minima, skipped=skipped, k=k)
    if len(minima) < 3:
        out["error"] = (f"approach 2 needs parabola minima at 3 or more compute budgets, got {len(minima)}"
                        + "".join(f"; C={s['C']:.3g}: {s['reason']}" for s in skipped))
        return out
    logc = np.log([m["C"] for m in minima])
    for key, name in (("N_opt", "a"), ("D_opt", "b")):
        res = stats.linregress(logc, np.log([m[key] for m in minima]))
        half = stats.t.ppf(0.5 + level / 2, len(logc) - 2) * res.stderr
        out[name] = float(res.slope)
        out[f"{name}_ci"] = [float(res.slope - half), float(res.slope + half)]
        out[f"{name}_coef"] = float(np.exp(res.intercept))  # X_opt = coef * C^slope
    out["ci_level"] = level
    return out
