"""Synthetic Chinchilla points and the fit benchmark (`python -m simscale.analysis bench`).

`isoflop_design` mimics an isoFLOP sweep: for each compute budget C, model sizes
spread around the compute-optimal N with D = C / 6N. `curve_design` mimics the
paper's grid: runs of several sizes and budgets, each evaluated along its learning
curve, so the points come in runs (for the run-level bootstrap). Losses come from
Hoffmann et al.'s published law with log-normal noise.

The benchmark times what a user waits for: the `fit` command end to end (a fresh
Python process, imports included) on a CSV of the points, the 4,500-start grid
in-process, and the run-level bootstrap.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
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


def curve_design(sizes=np.geomspace(1e7, 3e9, 8), budgets=np.geomspace(1e9, 1e11, 5), per_run: int = 6):
    """(x_nK of (N, D), run_n): every (size, budget) run evaluated at `per_run` token counts from
    15% to 100% of its budget."""
    runs = [(n, d) for n in sizes for d in budgets]
    x = np.array([(n, d * f) for n, d in runs for f in np.linspace(0.15, 1.0, per_run)])
    return x, np.repeat(np.arange(len(runs)), per_run)


def noisy_loss(law, truth: dict, x_nK, sigma: float, seed: int) -> np.ndarray:
    """law(x) under `truth` (natural parameters) times exp(N(0, sigma^2)) noise."""
    clean = law.predict(raw_from_natural(law, **truth), x_nK)
    return clean * np.exp(np.random.default_rng(seed).normal(0, sigma, len(clean)))


def _cli_fit_seconds(x_nK, loss_n) -> float:
    """Wall time of `python -m simscale.analysis fit --csv F --law approach3 --bootstrap 0` (new process)."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = pathlib.Path(tmp) / "points.csv"
        rows = (f"{n},{d},{loss}\n" for (n, d), loss in zip(x_nK.tolist(), loss_n.tolist()))
        csv.write_text("N,D,loss\n" + "".join(rows))
        root = str(pathlib.Path(__file__).resolve().parents[2])
        paths = [root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        command = [sys.executable, "-m", "simscale.analysis", "fit", "--csv", str(csv), "--law", "approach3",
                   "--bootstrap", "0"]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def bench(points: int = 240, bootstrap: int = 1000, sigma: float = 0.01, seed: int = 0, log=print) -> dict:
    """Time the `fit` command end to end, the 4,500-start grid and the run-level bootstrap."""
    per_run = 6
    n_runs = max(points // per_run, 4)
    sizes = np.geomspace(1e7, 3e9, max(n_runs // 5, 2))
    x, run = curve_design(sizes, np.geomspace(1e9, 1e11, n_runs // len(sizes)), per_run)
    loss = noisy_loss(APPROACH3, CHINCHILLA, x, sigma, seed)
    cli_s = _cli_fit_seconds(x, loss)
    log(f"fit command end to end (new process, imports, CSV), {len(x)} points, 4500 starts: {cli_s:.2f} s")
    t0 = time.perf_counter()
    fit = fit_law(APPROACH3, x, loss, groups=run)
    grid_s = time.perf_counter() - t0
    log(f"approach 3 in-process, {len(x)} points of {fit.n_runs} runs, {fit.n_starts} starts: "
        f"{grid_s:.2f} s; "
        + ", ".join(f"{k} {v:.4g}" for k, v in fit.params.items()))
    t0 = time.perf_counter()
    boot = fit_law(APPROACH3, x, loss, bootstrap=bootstrap, seed=seed, groups=run)
    boot_s = time.perf_counter() - t0 - grid_s
    log(f"run-level bootstrap, {bootstrap} resamples of {fit.n_runs} runs from the {len(boot.optima)} best "
        f"distinct grid optima: {boot_s:.2f} s (beyond the grid); "
        + ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in boot.ci.items()))
    return dict(points=len(x), runs=fit.n_runs, starts=fit.n_starts, cli_s=cli_s, grid_s=grid_s,
                bootstrap=bootstrap, bootstrap_s=boot_s, params=fit.params, ci=boot.ci)
