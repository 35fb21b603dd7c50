"""Variable projection for approach 3: a grid over (alpha, beta), non-negative least squares for (E, A, B).

For fixed exponents L(N, D) = E + A N^-alpha + B D^-beta is linear in (E, A, B), so
the best non-negative coefficients have a closed form; the exponents are searched on
a grid that is refined around the best cell. A fast cross-check of the Huber
multistart fit, and free of approach 2's isoFLOP-parabola bias (Czech et al. 2026,
arXiv 2603.22339: parabola minima are biased when the sampled sizes are off-centre
or alpha != beta).

The 3-variable NNLS is solved exactly by enumerating supports: the optimum is the
unconstrained least-squares solution on some subset of the columns with all
coefficients >= 0, and among those feasible subset solutions it has the smallest
residual. Columns are scaled to unit norm so the 3x3 normal equations stay well
conditioned.
"""
from __future__ import annotations

import itertools

import numpy as np

SUPPORTS = [s for k in (1, 2, 3) for s in itertools.combinations(range(3), k)]


def _nnls_grid(u_an, v_bn, y_n):
    """Exact NNLS of y on columns [1, u_a, v_b] for every (a, b): (sse_ab, coef_ab3) in the scaled basis.

    u_an, v_bn: unit-norm columns; the constant column is 1/sqrt(n)."""
    n = len(y_n)
    one = np.full(n, 1 / np.sqrt(n))
    A, B = len(u_an), len(v_bn)
    G = np.empty((A, B, 3, 3))
    G[..., 0, 0] = G[..., 1, 1] = G[..., 2, 2] = 1.0
    G[..., 0, 1] = G[..., 1, 0] = (u_an @ one)[:, None]
    G[..., 0, 2] = G[..., 2, 0] = (v_bn @ one)[None, :]
    G[..., 1, 2] = G[..., 2, 1] = u_an @ v_bn.T
    h = np.stack(np.broadcast_arrays((one @ y_n), (u_an @ y_n)[:, None], (v_bn @ y_n)[None, :]), -1)
    best_sse, best_coef = np.full((A, B), float(y_n @ y_n)), np.zeros((A, B, 3))
    for s in SUPPORTS:
        idx = list(s)
        Gs = G[..., idx, :][..., :, idx] + 1e-12 * np.eye(len(idx))
        c = np.linalg.solve(Gs, h[..., idx, None])[..., 0]
        sse = y_n @ y_n - np.einsum("abk,abk->ab", c, h[..., idx])
        better = np.all(c >= 0, -1) & (sse < best_sse)
        best_sse = np.where(better, sse, best_sse)
        full = np.zeros((A, B, 3))
        full[..., idx] = c
        best_coef = np.where(better[..., None], full, best_coef)
    return best_sse, best_coef


def fit_vpnls(N, D, loss, alpha_range=(0.01, 2.0), beta_range=(0.01, 2.0), grid: int = 64, refine: int = 3):
    """Least-squares approach-3 fit by variable projection: {E, A, B, alpha, beta, sse, n_points}."""
    N, D, y = (np.asarray(a, np.float64) for a in (N, D, loss))
    ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(y) & (N > 0) & (D > 0)
    if ok.sum() < 7:
        raise ValueError("the vpnls fit of 5 parameters needs at least 7 points (parameters + 2), "
                         f"got {int(ok.sum())}")
    logn, logd, y = np.log(N[ok]), np.log(D[ok]), y[ok]
    (a_lo, a_hi), (b_lo, b_hi) = alpha_range, beta_range
    for _ in range(refine + 1):
        alphas, betas = np.linspace(a_lo, a_hi, grid), np.linspace(b_lo, b_hi, grid)
        u, v = np.exp(-np.outer(alphas, logn)), np.exp(-np.outer(betas, logd))
        un, vn = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
        sse, coef = _nnls_grid(u / un[:, None], v / vn[:, None], y)
        i, j = np.unravel_index(np.argmin(sse), sse.shape)
        da, db = alphas[1] - alphas[0], betas[1] - betas[0]
        a_lo, a_hi = max(alphas[i] - da, 1e-6), alphas[i] + da
        b_lo, b_hi = max(betas[j] - db, 1e-6), betas[j] + db
    c = coef[i, j]
    return dict(E=float(c[0] / np.sqrt(len(y))), A=float(c[1] / un[i]), B=float(c[2] / vn[j]),
                alpha=float(alphas[i]), beta=float(betas[j]), sse=float(sse[i, j]), n_points=int(len(y)))
