"""Predicting a task's accuracy of the largest model from the smaller ones, in two steps.

After the OLMo model ladder (Bhagia et al. 2024, arXiv 2412.04403):

1. (N, D) -> task loss: `E + A / N^alpha` when the smaller models share one token
   budget, else approach 3's `E + A / N^alpha + B / D^beta` (the Huber fit of fit.py).
2. task loss -> accuracy: a sigmoid from chance (high loss) to 1 (zero loss),
   `acc = chance + (1 - chance) / (1 + exp(k (L - L0)))`, weighted least squares
   (weights 1 / binomial variance). The ladder paper also frees floor and ceiling;
   with a handful of small models two parameters are what the points support.

The task loss is the record with metric `gold_nll` (mean negative log-likelihood
of the gold choice) when eval.json has one; otherwise the run's evaluation loss
(the same for every task), and the result says which (`task_loss`).

The interval resamples the smaller models (runs) with replacement and redoes both
steps per resample: step 1 from the best optima of the full fit, step 2 on a
(k, L0) grid scored for all resamples at once.
"""
from __future__ import annotations

import numpy as np

from simscale.analysis.fit import bootstrap_optima, fit_law, run_weights
from simscale.analysis.laws import LAWS

TASK_LOSS_METRIC = "gold_nll"
GRID = 80  # points per axis of the step-2 (log k, L0) grid


def sigmoid_acc(loss, k, L0, chance):
    """Accuracy from task loss: chance at high loss, 1 at zero loss, steepness k, midpoint L0."""
    return chance + (1 - chance) / (1 + np.exp(np.clip(k * (np.asarray(loss) - L0), -50, 50)))


def _sigmoid_grid(loss_m):
    """(G, 2) candidate (k, L0): L0 across and beyond the losses seen, k log-spaced by the loss spread."""
    lo, hi = loss_m.min(), loss_m.max()
    spread = max(hi - lo, 1e-3)
    ks = np.geomspace(0.1 / spread, 200 / spread, GRID)
    l0s = np.linspace(lo - 2 * spread, hi + 2 * spread, GRID)
    return np.stack(np.meshgrid(ks, l0s, indexing="ij"), -1).reshape(-1, 2)


def fit_sigmoid(loss_m, acc_m, n_m, chance, W_Km) -> np.ndarray:
    """(K, 2) weighted least-squares (k, L0) for each row of model weights W_Km (grid search)."""
    kl_G2 = _sigmoid_grid(loss_m)
    var_m = np.maximum(acc_m * (1 - acc_m), 0.25 / n_m) / n_m  # a 0 or 1 score still gets a variance
    resid_Gm = (acc_m - sigmoid_acc(loss_m[None], kl_G2[:, :1], kl_G2[:, 1:], chance)) ** 2 / var_m
    return kl_G2[np.argmin(W_Km @ resid_Gm.T, axis=1)]


def _step1_law(D_m) -> tuple[str, tuple[str, ...]]:
    return ("power", ("N",)) if len(np.unique(D_m)) == 1 else ("approach3", ("N", "D"))


def step1(N_m, D_m, loss_m, target: int, bootstrap: int = 200, seed: int = 0) -> dict:
    """Task loss of model `target` from the models with smaller N: the full-data prediction (row 0 of
    loss_K) and one per resample of the smaller models (rows 1..K, weights W_Km)."""
    N_m, D_m, loss_m = (np.asarray(a, float) for a in (N_m, D_m, loss_m))
    small = N_m < N_m[target]
    law, inputs = _step1_law(D_m[small])
    x_mK = np.stack([N_m, D_m], -1)[:, : len(inputs)]
    fit = fit_law(law, x_mK[small], loss_m[small], inputs)  # refuses too few smaller models
    W_Km = np.vstack([np.ones(small.sum()), run_weights(np.arange(small.sum()), bootstrap, seed)])
    starts = np.broadcast_to(fit.optima, (len(W_Km),) + fit.optima.shape)
    theta_KP = bootstrap_optima(LAWS[law], np.log(x_mK[small]), np.log(loss_m[small]), W_Km, starts)
    theta_KP[0] = fit.theta
    loss_K = np.array([LAWS[law].predict(t, x_mK[target : target + 1])[0] for t in theta_KP])
    return dict(law=law, small=small, W_Km=W_Km, loss_K=loss_K, measured_loss=float(loss_m[target]))


def step2(s1: dict, loss_m, acc_m, n_m, chance: float, target: int, level: float = 0.95) -> dict:
    """Accuracy of model `target`: step 1's task losses through the sigmoid fitted to the smaller models."""
    loss_m, acc_m, n_m = (np.asarray(a, float) for a in (loss_m, acc_m, n_m))
    small, W_Km, loss_K = s1["small"], s1["W_Km"], s1["loss_K"]
    kl_K2 = fit_sigmoid(loss_m[small], acc_m[small], n_m[small], chance, W_Km)
    acc_K = sigmoid_acc(loss_K, kl_K2[:, 0], kl_K2[:, 1], chance)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(acc_K[1:], [tail, 100 - tail]) if len(acc_K) > 1 else (np.nan, np.nan)
    measured = float(acc_m[target])
    return dict(n_models=int(small.sum()), step1_law=s1["law"], predicted_loss=float(loss_K[0]),
                measured_loss=s1["measured_loss"], predicted=float(acc_K[0]), ci=[float(lo), float(hi)],
                ci_level=level, bootstrap=len(acc_K) - 1, measured=measured,
                measured_stderr=float(np.sqrt(measured * (1 - measured) / n_m[target])),
                acc_error=float(acc_K[0] - measured), k=float(kl_K2[0, 0]), L0=float(kl_K2[0, 1]))


def predict(N_m, D_m, loss_m, acc_m, n_m, chance: float, target: int, bootstrap: int = 200,
            level: float = 0.95, seed: int = 0) -> dict:
    """Predict model `target`'s accuracy from the models with smaller N (both steps, with interval)."""
    s1 = step1(N_m, D_m, loss_m, target, bootstrap, seed)
    out = step2(s1, loss_m, acc_m, n_m, chance, target, level)
    return dict(out, N=float(N_m[target]), D=float(D_m[target]))
