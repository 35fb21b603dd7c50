"""Scaling-law forms, written in log space for robust fitting.

Each law predicts log-loss from log-inputs with raw parameters theta (log-space
coefficients and exponents) and gives the gradient analytically, batched over
many parameter vectors at once (B starts or bootstrap resamples):

    log_predict(theta_BP, logx_nK) -> (logL_Bn, pullback)

where pullback(ct_Bn) -> grad_BP gives sum_n ct_Bn * dlogL_Bn/dtheta_BP.

- approach3: L(N, D) = E + A / N^alpha + B / D^beta
             = exp(LSE(a - alpha log N, b - beta log D, e))   (Chinchilla)
- power:     L(X) = E + A / X^alpha = exp(LSE(a - alpha log X, e))
- kaplan:    L(X) = (X_c / X)^alpha, i.e. log L = c - alpha log X, c = alpha log X_c
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

import numpy as np


def _lse(*terms_Bn: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """log of the sum of exp(terms) (shapes broadcast, e.g. (B, n) and (B, 1)) and each term's share.

    Exponents are capped (80 in float32, 700 in float64) instead of shifted by their maximum: one
    exp per term and no maximum pass (the fit's hot loop); a capped term only arises far outside
    any sensible fit, where it stops overflow.
    """
    cap = 80.0 if np.result_type(*terms_Bn) == np.float32 else 700.0
    exps = [np.exp(np.minimum(t, cap)) for t in terms_Bn]
    total = exps[0] + exps[1]
    for e in exps[2:]:
        total += e
    inv = 1.0 / total
    return np.log(total), [e * inv for e in exps]


def _approach3(theta_BP, logx_nK):
    a, b, e, alpha, beta = (theta_BP[:, i, None] for i in range(5))
    log_n, log_d = logx_nK[:, 0], logx_nK[:, 1]
    t_n = a - alpha * log_n
    out, (w_n, w_d, w_e) = _lse(t_n, b - beta * log_d, e)

    def pullback(ct_Bn):
        u_n, u_d = ct_Bn * w_n, ct_Bn * w_d
        return np.stack([u_n.sum(1), u_d.sum(1), (ct_Bn * w_e).sum(1), -u_n @ log_n, -u_d @ log_d], -1)

    return out, pullback


def _power(theta_BP, logx_nK):
    a, e, alpha = (theta_BP[:, i, None] for i in range(3))
    log_x = logx_nK[:, 0]
    t_x = a - alpha * log_x
    out, (w_x, w_e) = _lse(t_x, e)

    def pullback(ct_Bn):
        u_x = ct_Bn * w_x
        return np.stack([u_x.sum(1), (ct_Bn * w_e).sum(1), -u_x @ log_x], -1)

    return out, pullback


def _kaplan(theta_BP, logx_nK):
    log_x = logx_nK[:, 0]
    out = theta_BP[:, 0, None] - theta_BP[:, 1, None] * log_x
    return out, lambda ct_Bn: np.stack([ct_Bn.sum(1), -ct_Bn @ log_x], -1)


def _grid(**axes) -> np.ndarray:
    return np.array(list(itertools.product(*axes.values())), dtype=np.float64)


# Hoffmann et al. (2022), appendix D.2: the grid of L-BFGS initialisations.
_EXP = np.arange(0.0, 2.01, 0.5)  # alpha, beta in {0, 0.5, ..., 2}
_E = np.arange(-1.0, 1.01, 0.5)  # e in {-1, -0.5, ..., 1}
_COEF = np.arange(0.0, 25.01, 5.0)  # a, b in {0, 5, ..., 25}


@dataclasses.dataclass(frozen=True)
class Law:
    """One law form: its inputs, raw parameters and natural-parameter view."""

    name: str
    raw: tuple[str, ...]
    log_predict: Callable
    natural: Callable[[np.ndarray], dict]
    grid: np.ndarray  # (S, P) starts; empty: start from a least-squares guess

    def predict(self, theta_P: np.ndarray, x_nK: np.ndarray) -> np.ndarray:
        """Loss (not log) at inputs x_nK (natural units: parameters, tokens, FLOPs)."""
        log_l, _ = self.log_predict(np.asarray(theta_P, float)[None], np.log(np.asarray(x_nK, float)))
        return np.exp(log_l[0])


APPROACH3 = Law(
    "approach3",
    ("a", "b", "e", "alpha", "beta"),
    _approach3,
    lambda t: dict(E=np.exp(t[2]), A=np.exp(t[0]), B=np.exp(t[1]), alpha=t[3], beta=t[4]),
    _grid(a=_COEF, b=_COEF, e=_E, alpha=_EXP, beta=_EXP),  # 6*6*5*5*5 = 4,500 starts
)
POWER = Law(
    "power",
    ("a", "e", "alpha"),
    _power,
    lambda t: dict(E=np.exp(t[1]), A=np.exp(t[0]), alpha=t[2]),
    _grid(a=_COEF, e=_E, alpha=_EXP),
)
KAPLAN = Law(
    "kaplan",
    ("c", "alpha"),
    _kaplan,
    lambda t: dict(X_c=float(np.exp(t[0] / t[1])) if t[1] != 0 else float("nan"), alpha=t[1]),
    np.zeros((0, 2)),
)
LAWS = {law.name: law for law in (APPROACH3, POWER, KAPLAN)}


def raw_from_natural(law: Law, **p) -> np.ndarray:
    """Inverse of law.natural: e.g. raw_from_natural(APPROACH3, E=1.69, A=406.4, ...)."""
    if law is APPROACH3:
        return np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]])
    if law is POWER:
        return np.array([np.log(p["A"]), np.log(p["E"]), p["alpha"]])
    return np.array([p["alpha"] * np.log(p["X_c"]), p["alpha"]])
