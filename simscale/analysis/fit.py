"""Robust scaling-law fits: Huber loss on log-loss residuals, batched L-BFGS.

Every start of the published grid (4,500 for approach 3) and every bootstrap
resample is one row of a batch; the objective and its analytic gradient are
evaluated for the whole batch in numpy. All starts are first optimised in
float32 (numpy's float32 exp and log are about 3x faster than float64 ones), then
the best few are refined in float64 to full precision; the best refined one wins.

A bootstrap resample draws whole runs (groups of points) with replacement: a
run's learning-curve points are correlated, so resampling single points gives
intervals that are too narrow. Each resample is started from the optima of the
best few distinct grid starts, not only from the full-data optimum.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from simscale.analysis.laws import Law, LAWS

HUBER_DELTA = 1e-3  # Hoffmann et al. (2022)


CHUNK_ELEMENTS = 1 << 16  # rows x points per pass: temporaries stay in cache (about 5x faster than one pass)


def huber_objective(law: Law, theta_BP, logx_nK, logl_n, weights, delta=HUBER_DELTA):
    """Weighted Huber loss of log-residuals per row and its gradient (B,), (B, P).

    logl_n and weights: (n,) shared by all rows or (B, n) one row per problem.
    """
    f_B, g_BP = np.empty(len(theta_BP)), np.empty(theta_BP.shape)
    chunk = max(1, CHUNK_ELEMENTS // max(np.shape(logl_n)[-1], 1))
    for i in range(0, len(theta_BP), chunk):
        rows = slice(i, i + chunk)
        w = weights if np.ndim(weights) == 1 else weights[rows]
        y = logl_n if np.ndim(logl_n) == 1 else logl_n[rows]
        pred_bn, pullback = law.log_predict(theta_BP[rows], logx_nK)
        r_bn = pred_bn - y
        absr = np.abs(r_bn)
        c_bn = np.minimum(absr, delta)
        f_B[rows] = (c_bn * (absr - 0.5 * c_bn) * w).sum(-1)  # 0.5 r^2 inside [-delta, delta], linear outside
        g_BP[rows] = pullback(np.clip(r_bn, -delta, delta) * w)
    return f_B, g_BP


def _dot(a_bP, b_bP) -> np.ndarray:
    return np.einsum("bp,bp->b", a_bP, b_bP)


def _direction(g_bP, S_MbP, Y_MbP, rho_Mb, gamma_b, newest: int) -> np.ndarray:
    """-H g by the L-BFGS two-loop recursion over the ring of memory slots (newest first; rho 0:
    an empty slot). gamma_b scales the initial Hessian; nan (no curvature yet): a cautious step."""
    memory = len(rho_Mb)
    order = [(newest - j) % memory for j in range(memory)]
    q = g_bP.copy()
    alphas = {}
    for j in order:
        alphas[j] = rho_Mb[j] * _dot(S_MbP[j], q)
        q -= alphas[j][:, None] * Y_MbP[j]
    first = 1.0 / np.maximum(1.0, np.linalg.norm(g_bP, axis=-1))
    d = np.where(np.isnan(gamma_b), first, gamma_b)[:, None] * q
    for j in reversed(order):
        d += (alphas[j] - rho_Mb[j] * _dot(Y_MbP[j], d))[:, None] * S_MbP[j]
    return -d


def _backtrack(fun, x_bP, f_b, d_bP, gd_b, rows, c1, max_backtracks):
    """Armijo backtracking per row, re-evaluating only the rows still searching.

    Trial steps shrink to the minimum of the quadratic through f(0), f'(0) and f(step),
    kept within [0.1, 0.5] x step. Returns (step, f_new, g_new); f_new is inf where no
    step decreased f.
    """
    step = np.ones(len(rows))
    f_new = np.full(len(rows), np.inf)
    g_new = np.zeros_like(x_bP)
    todo = np.arange(len(rows))
    for _ in range(max_backtracks):
        fx, gx = fun(x_bP[todo] + step[todo, None] * d_bP[todo], rows[todo])
        ok = np.isfinite(fx) & (fx <= f_b[todo] + c1 * step[todo] * gd_b[todo])
        f_new[todo[ok]], g_new[todo[ok]] = fx[ok], gx[ok]
        todo, t, fail = todo[~ok], step[todo[~ok]], fx[~ok]
        if todo.size == 0:
            break
        curv = fail - f_b[todo] - gd_b[todo] * t
        trial = np.where(curv > 0, -gd_b[todo] * t**2 / (2 * np.where(curv > 0, curv, 1.0)), 0.1 * t)
        step[todo] = np.clip(trial, 0.1 * t, 0.5 * t)
    return step, f_new, g_new


def lbfgs(fun, x0_BP, max_iter=1000, memory=10, gtol=1e-9, ftol=2.2e-9, c1=1e-4, max_backtracks=40,
          compact_at=0.75):
    """Minimise B independent problems at once with L-BFGS and Armijo backtracking.

    fun(x_bP, rows) -> (f_b, g_bP) for the problems `rows` (indices into the batch).
    A problem stops when its relative decrease falls below ftol (scipy L-BFGS-B's default),
    its gradient below gtol, no step decreases it, or after max_iter iterations; only running
    problems are evaluated. The state of the running problems is kept in compact arrays (a ring
    of memory slots shared by all rows, no per-row shuffling), squeezed when fewer than
    `compact_at` of its rows still run. Returns (x_BP, f_B, iterations used).
    """
    x_out = np.array(x0_BP, dtype=np.float64)
    B, P = x_out.shape
    f_out, g = fun(x_out, np.arange(B))
    rows = np.flatnonzero(np.isfinite(f_out) & (np.abs(g).max(-1) > gtol))  # problems in the compact state
    x, f, g = x_out[rows], f_out[rows], g[rows]
    S, Y = np.zeros((memory, len(rows), P)), np.zeros((memory, len(rows), P))
    rho = np.zeros((memory, len(rows)))
    gamma = np.full(len(rows), np.nan)
    live = np.ones(len(rows), bool)
    newest, it = memory - 1, 0
    for it in range(1, max_iter + 1):
        if not live.any():
            break
        if live.mean() < compact_at:
            x_out[rows[~live]], f_out[rows[~live]] = x[~live], f[~live]
            rows, x, f, g, gamma = rows[live], x[live], f[live], g[live], gamma[live]
            S, Y, rho, live = S[:, live], Y[:, live], rho[:, live], live[live]
        d = _direction(g, S, Y, rho, gamma, newest)
        gd = _dot(g, d)
        bad = ~(gd < 0)  # not a descent direction (or nan): restart from steepest descent
        if bad.any():
            d[bad] = -g[bad] / np.maximum(1.0, np.linalg.norm(g[bad], axis=-1))[:, None]
            gd[bad] = _dot(g[bad], d[bad])
            rho[:, bad], gamma[bad] = 0.0, np.nan
        act = np.flatnonzero(live)
        step, f_new, g_new = _backtrack(fun, x[act], f[act], d[act], gd[act], rows[act], c1, max_backtracks)
        moved = np.isfinite(f_new)
        live[act[~moved]] = False  # no decrease along d even for tiny steps: done
        act, f_new, g_new = act[moved], f_new[moved], g_new[moved]
        s, y = step[moved, None] * d[act], g_new - g[act]
        sy = _dot(s, y)
        keep = (sy > 1e-12 * np.linalg.norm(s, axis=-1) * np.linalg.norm(y, axis=-1)) & (sy > 1e-100)
        newest = (newest + 1) % memory  # the oldest slot takes the new pair; rho 0 where curvature fails
        S[newest], Y[newest], rho[newest] = 0.0, 0.0, 0.0
        upd = act[keep]
        S[newest, upd], Y[newest, upd], rho[newest, upd] = s[keep], y[keep], 1.0 / sy[keep]
        gamma[upd] = sy[keep] / _dot(y[keep], y[keep])
        f_old = f[act]
        x[act] += s
        f[act], g[act] = f_new, g_new
        small_f = (f_old - f_new) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f_new)), 1e-12)
        live[act[small_f | (np.abs(g_new).max(-1) <= gtol)]] = False
    x_out[rows], f_out[rows] = x, f
    return x_out, f_out, it


SCREEN_FTOL = 1e-6  # float32 pass: a start stops when its relative decrease falls below this
SCREEN_MAX_ITER = 200  # float32 pass: iterations per start (the refined ones go on in float64)
POLISH = 8  # best float32 optima refined in float64 (per problem)
BOOT_STARTS = 4  # distinct best grid optima each bootstrap resample starts from
DISTINCT_DECIMALS = 3  # optima whose raw parameters agree to this many decimals are one optimum
MIN_BOOT_RUNS = 3  # fewer runs than this: no bootstrap interval (resampling 1-2 runs says nothing)


def _objective(law: Law, logx_nK, logl_n, weights, delta, dtype):
    """fun(theta_bP, rows) for `lbfgs`: the Huber objective computed in `dtype`.

    logl_n and weights: (n,) shared by every problem, or (S, n) one row per problem (indexed by `rows`).
    """
    lx, ll, w = (np.asarray(a, dtype) for a in (logx_nK, logl_n, weights))

    def fun(theta_bP, rows):
        with np.errstate(all="ignore"):  # far-off trial steps overflow to inf: the line search rejects them
            return huber_objective(law, theta_bP.astype(dtype), lx, ll if ll.ndim == 1 else ll[rows],
                                   w if w.ndim == 1 else w[rows], delta)

    return fun


def _best_rows(f_S, problem_S, k: int) -> np.ndarray:
    """Indices of the k lowest finite f per problem, sorted by (problem, f)."""
    f = np.where(np.isfinite(f_S), f_S, np.inf)
    order = np.lexsort((f, problem_S))
    first = np.searchsorted(problem_S[order], problem_S[order], side="left")
    return order[np.arange(len(order)) - first < k]


def _rows(a, sel):
    """Rows `sel` of a per-problem array; a shared (n,) array as it is."""
    return a if a.ndim == 1 else a[sel]


def multistart(law: Law, logx_nK, logl_n, weights, starts_SP, problem_S=None, polish: int = POLISH,
               delta: float = HUBER_DELTA):
    """Optimise every start in float32, then refine the `polish` best per problem in float64.

    logl_n, weights: (n,) shared, or (S, n) one row per start; problem_S: the problem each start
    belongs to (default: all one). Returns the refined rows sorted by (problem, objective):
    (theta_RP, f_R, problem_R, index_R) with index_R the start each row came from.
    """
    starts_SP = np.atleast_2d(np.asarray(starts_SP, np.float64))
    problem_S = np.zeros(len(starts_SP), int) if problem_S is None else np.asarray(problem_S)
    logl_n, weights = np.asarray(logl_n, np.float64), np.asarray(weights, np.float64)
    screen = _objective(law, logx_nK, logl_n, weights, delta, np.float32)
    theta_SP, f_S, _ = lbfgs(screen, starts_SP, max_iter=SCREEN_MAX_ITER, ftol=SCREEN_FTOL)
    sel = _best_rows(f_S, problem_S, polish)
    refine = _objective(law, logx_nK, _rows(logl_n, sel), _rows(weights, sel), delta, np.float64)
    theta_RP, f_R, _ = lbfgs(refine, theta_SP[sel])
    again = _best_rows(f_R, problem_S[sel], polish)
    return theta_RP[again], f_R[again], problem_S[sel][again], sel[again]


def distinct_optima(theta_RP, k: int) -> np.ndarray:
    """The first k rows that differ from every earlier row (to DISTINCT_DECIMALS decimals)."""
    _, first = np.unique(np.round(theta_RP, DISTINCT_DECIMALS), axis=0, return_index=True)
    return theta_RP[np.sort(first)[:k]]


def run_weights(groups_n, resamples: int, seed: int) -> np.ndarray:
    """(K, n) bootstrap weights: each resample draws the groups (runs) with replacement and gives
    every point its group's count, so all points of a run enter or leave together."""
    _, index_n = np.unique(np.asarray(groups_n), return_inverse=True)
    G = index_n.max() + 1
    counts_KG = np.random.default_rng(seed).multinomial(G, np.full(G, 1.0 / G), size=resamples)
    return counts_KG[:, index_n].astype(np.float64)


@dataclasses.dataclass
class Fit:
    """A fitted law: natural parameters, intervals and fit diagnostics."""

    law: str
    inputs: tuple[str, ...]
    theta: np.ndarray  # raw (log-space) parameters
    params: dict  # natural parameters, e.g. E, A, B, alpha, beta
    ci: dict  # name -> (low, high) bootstrap percentile interval ({} without bootstrap)
    level: float
    objective: float
    n_points: int
    n_runs: int  # distinct groups (runs) among the points; each point its own without groups
    r2: float  # on loss (not log-loss)
    rmse_log: float
    n_starts: int
    bootstrap: int
    fit_time_s: float
    boot_params: dict = dataclasses.field(default_factory=dict, repr=False)  # name -> (K,) samples
    optima: np.ndarray | None = dataclasses.field(default=None, repr=False)  # distinct best optima (raw)
    ci_note: str = ""  # why there is no interval despite a requested bootstrap
    bootstrap_unit: str = "points"  # what a resample draws: "runs" (groups given) or "points"

    def predict(self, x_nK) -> np.ndarray:
        return LAWS[self.law].predict(self.theta, x_nK)

    def to_json(self) -> dict:
        out = {k: float(v) for k, v in self.params.items()}
        out.update(
            law=self.law,
            inputs=list(self.inputs),
            ci={k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()},
            ci_level=self.level,
            objective=float(self.objective),
            n_points=self.n_points,
            n_runs=self.n_runs,
            r2=float(self.r2),
            rmse_log=float(self.rmse_log),
            n_starts=self.n_starts,
            bootstrap=self.bootstrap,
            bootstrap_unit=self.bootstrap_unit,
            fit_time_s=round(self.fit_time_s, 3),
        )
        if self.ci_note:
            out["ci_note"] = self.ci_note
        return out


def _check_points(law: Law, x_nK, loss_n, inputs, groups_n):
    """Finite, positive points (and their groups); refuses fewer than parameters + 2 points."""
    loss_n = np.asarray(loss_n, dtype=np.float64)
    x_nK = np.asarray(x_nK, dtype=np.float64).reshape(len(loss_n), -1)
    groups_n = np.arange(len(loss_n)) if groups_n is None else np.asarray(groups_n)
    if len(groups_n) != len(loss_n):
        raise ValueError(f"groups has {len(groups_n)} entries for {len(loss_n)} points: "
                         "give one run label per point")
    ok = np.isfinite(loss_n) & (loss_n > 0) & np.all(np.isfinite(x_nK) & (x_nK > 0), axis=1)
    need = len(law.raw) + 2
    if ok.sum() < need:
        raise ValueError(
            f"too few points for the {law.name} law in {', '.join(inputs)}: a fit of {len(law.raw)} "
            f"parameters needs at least {need} points (parameters + 2) with finite positive loss and inputs, "
            f"got {int(ok.sum())} (of {len(loss_n)})"
        )
    return x_nK[ok], loss_n[ok], groups_n[ok]


def _starts(law: Law, logx_nK, logl_n) -> np.ndarray:
    if len(law.grid):
        return law.grid
    slope, intercept = np.polyfit(logx_nK[:, 0], logl_n, 1)  # Kaplan: log L = c - alpha log X
    return np.array([[intercept, -slope]])


def _percentiles(law: Law, theta_KP, names, level) -> tuple[dict, dict]:
    """Natural-parameter samples and percentile intervals from bootstrap optima."""
    samples = [law.natural(t) for t in theta_KP]
    tail = 100 * (1 - level) / 2
    boot = {k: np.array([s[k] for s in samples], dtype=np.float64) for k in names}
    return boot, {k: tuple(np.nanpercentile(v, [tail, 100 - tail])) for k, v in boot.items()}


def bootstrap_optima(law: Law, logx_nK, logl_n, W_Kn, starts_KJP, delta=HUBER_DELTA) -> np.ndarray:
    """(K, P) optimum of each weighted resample k, started from each of its starts starts_KJP[k].

    logl_n: (n,) shared, or (K, n) one loss vector per resample (e.g. replicated data sets).
    """
    K, J, P = starts_KJP.shape
    problem_S = np.repeat(np.arange(K), J)
    logl_n = np.asarray(logl_n, np.float64)
    theta_RP, _, problem_R, _ = multistart(law, logx_nK, _rows(logl_n, problem_S), W_Kn[problem_S],
                                           starts_KJP.reshape(K * J, P), problem_S, polish=1, delta=delta)
    return theta_RP[np.unique(problem_R, return_index=True)[1]]


def fit_law(
    law: Law | str,
    x_nK,
    loss_n,
    inputs: tuple[str, ...] = ("N", "D"),
    delta: float = HUBER_DELTA,
    bootstrap: int = 0,
    level: float = 0.95,
    seed: int = 0,
    starts: np.ndarray | None = None,
    groups=None,
    boot_starts: int = BOOT_STARTS,
) -> Fit:
    """Fit `law` to points (x_nK in natural units, loss_n) with the Huber loss in log space.

    All starts (default: the law's published grid) are optimised at once. `groups` labels the
    run of each point (default: every point its own); `bootstrap` resamples draw runs with
    replacement and start from the `boot_starts` best distinct grid optima.
    """
    law = LAWS[law] if isinstance(law, str) else law
    t0 = time.perf_counter()
    x_nK, loss_n, groups_n = _check_points(law, x_nK, loss_n, inputs, groups)
    logx, logl = np.log(x_nK), np.log(loss_n)
    starts = _starts(law, logx, logl) if starts is None else np.atleast_2d(starts)
    theta_RP, f_R, _, _ = multistart(law, logx, logl, np.ones(len(logl)), starts, delta=delta)
    theta = theta_RP[0]
    params = {k: float(v) for k, v in law.natural(theta).items()}
    pred = law.predict(theta, x_nK)
    r2 = 1.0 - np.sum((loss_n - pred) ** 2) / max(np.sum((loss_n - loss_n.mean()) ** 2), 1e-300)
    rmse_log = float(np.sqrt(np.mean((np.log(pred) - logl) ** 2)))
    optima = distinct_optima(theta_RP, boot_starts)
    ci, boot, n_runs, note = {}, {}, len(np.unique(groups_n)), ""
    if 0 < bootstrap and n_runs < MIN_BOOT_RUNS:
        note = f"no interval: the points come from {n_runs} run(s); a run bootstrap needs {MIN_BOOT_RUNS}"
        bootstrap = 0
    if bootstrap > 0:
        W_Kn = run_weights(groups_n, bootstrap, seed)
        starts_KJP = np.broadcast_to(optima, (bootstrap,) + optima.shape)
        theta_KP = bootstrap_optima(law, logx, logl, W_Kn, starts_KJP, delta)
        boot, ci = _percentiles(law, theta_KP, params, level)
    return Fit(
        law.name, tuple(inputs), theta, params, ci, level, float(f_R[0]), len(logl), n_runs,
        float(r2), rmse_log, len(starts), bootstrap, time.perf_counter() - t0, boot, optima, note,
        "points" if groups is None else "runs",
    )


def extrapolation(law: Law | str, x_nK, loss_n, inputs=("N", "D"), holdout: int = 1, **fit_kw) -> dict:
    """Out-of-sample check: fit without the `holdout` largest distinct values of the first input,
    from the law's full start grid (nothing fitted with the held-out points), and predict them.

    Errors of the held-out points: mean and max |pred - loss| in nats, the same relative to the
    held-out loss, the mean relative to the spread (standard deviation) of the training losses,
    and the mean signed log error (positive: the law over-predicts the loss).
    """
    x_nK = np.asarray(x_nK, dtype=np.float64).reshape(len(loss_n), -1)
    loss_n = np.asarray(loss_n, dtype=np.float64)
    sizes = np.unique(x_nK[:, 0])
    if len(sizes) <= holdout + 1:
        raise ValueError(f"extrapolation check needs more than {holdout + 1} distinct {inputs[0]}, "
                         f"got {len(sizes)}")
    test = x_nK[:, 0] >= sizes[-holdout]
    if fit_kw.get("groups") is not None:
        fit_kw["groups"] = np.asarray(fit_kw["groups"])[~test]
    fit = fit_law(law, x_nK[~test], loss_n[~test], inputs, **fit_kw)
    pred, true = fit.predict(x_nK[test]), loss_n[test]
    ok = np.isfinite(true)
    err = np.abs(pred[ok] - true[ok])
    train = loss_n[~test][np.isfinite(loss_n[~test])]
    return dict(
        held_out=f"{inputs[0]} >= {sizes[-holdout]:.4g}", n_train=fit.n_points, n_test=int(ok.sum()),
        n_starts=fit.n_starts, mean_abs_error=float(err.mean()), max_abs_error=float(err.max()),
        mean_abs_rel_error=float((err / true[ok]).mean()), max_abs_rel_error=float((err / true[ok]).max()),
        error_over_train_sd=float(err.mean() / max(train.std(), 1e-300)),
        mean_log_error=float(np.mean(np.log(pred[ok] / true[ok]))), params=fit.params,
    )
