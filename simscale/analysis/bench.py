"""Synthetic Chinchilla points and the fit benchmark (`python -m simscale.analysis bench`).

The design mimics an isoFLOP sweep: for each compute budget C, model sizes
spread around the compute-optimal N with D = C / 6N, losses from Hoffmann et
al.'s published law with log-normal noise.
"""
from __future__ import annotations

import time

import numpy as np

from simscale.analysis import optimal
from simscale.analysis.fit import fit_law
from simscale.analysis.laws import APPROACH3, raw_from_natural

CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def isoflop_design(budgets=np.logspace(18, 22, 7), per_budget: int = 24, spread: float = 30.0) -> np.ndarray:
    """(n, 2) array of (N, D): per budget, `per_budget` sizes within `spread`x of the optimum."""
    pts = []
    for c in budgets:
        n_opt = optimal.optimal_nd(CHINCHILLA, c)[0]
        pts += [(n, c / (6 * n)) for n in np.geomspace(n_opt / spread, n_opt * spread, per_budget)]
    return np.array(pts)


def noisy_loss(law, truth: dict, x_nK, sigma: float, seed: int) -> np.ndarray:
    """law(x) under `truth` (natural parameters) times exp(N(0, sigma^2)) noise."""
    clean = law.predict(raw_from_natural(law, **truth), x_nK)
    return clean * np.exp(np.random.default_rng(seed).normal(0, sigma, len(clean)))


def bench(points: int = 300, bootstrap: int = 1000, sigma: float = 0.01, seed: int = 0, log=print) -> dict:
    """Time the 4,500-start grid and the bootstrap on `points` synthetic points."""
    budgets = np.logspace(18, 22, 10)
    x = isoflop_design(budgets, per_budget=max(points // len(budgets), 3))
    loss = noisy_loss(APPROACH3, CHINCHILLA, x, sigma, seed)
    t0 = time.perf_counter()
    fit = fit_law(APPROACH3, x, loss)
    grid_s = time.perf_counter() - t0
    log(f"approach 3, {len(x)} points, {fit.n_starts} starts: {grid_s:.2f} s; "
        + ", ".join(f"{k} {v:.4g}" for k, v in fit.params.items()))
    t0 = time.perf_counter()
    boot = fit_law(APPROACH3, x, loss, bootstrap=bootstrap, starts=fit.theta, seed=seed)
    boot_s = time.perf_counter() - t0
    log(f"bootstrap, {bootstrap} resamples from the best start: {boot_s:.2f} s; "
        + ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in boot.ci.items()))
    return dict(points=len(x), starts=fit.n_starts, grid_s=grid_s, bootstrap=bootstrap, bootstrap_s=boot_s,
                params=fit.params, ci=boot.ci)
