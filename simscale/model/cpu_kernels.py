"""Projections and causal attention with hand-written backward passes, for XLA:CPU.

Same maths as the plain jnp versions, laid out so XLA:CPU does not fuse elementwise work
into transposing copies or tiny per-head matmuls (profiled: those fusions took 30-40% of
a training step). `jax.lax.optimization_barrier` pins what gets materialised.
Shapes: B batch, T time, H query heads, K kv heads, E head dim, N rows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def project(x, w, n_in: int = 1):
    """Contract the last `n_in` axes of x with the first `n_in` axes of w (= jnp.tensordot(x, w, n_in))."""
    k = x.ndim - n_in
    out = _dense(x.reshape(-1, int(np.prod(x.shape[k:]))), w.reshape(int(np.prod(w.shape[:n_in])), -1))
    return out.reshape(*x.shape[:k], *w.shape[n_in:])


@jax.custom_vjp
def _dense(x_NI, w_IO):
    return x_NI @ w_IO


def _dense_forward(x_NI, w_IO):
    return x_NI @ w_IO, (x_NI, w_IO)


def _dense_backward(residuals, d_NO):
    x_NI, w_IO = residuals
    # An explicit transposed copy of x keeps XLA from writing d transposed inside an elementwise fusion.
    return d_NO @ w_IO.T, jax.lax.optimization_barrier(x_NI.T) @ d_NO


_dense.defvjp(_dense_forward, _dense_backward)


def causal_attention(q_BTHE, k_BTKE, v_BTKE):
    """softmax(q k^T / sqrt(E) + causal mask) v -> [B, T, H, E]; kv heads are shared by H/K query heads."""
    H, K = q_BTHE.shape[2], k_BTKE.shape[2]
    if K != H:
        k_BTKE, v_BTKE = (jnp.repeat(x, H // K, axis=2) for x in (k_BTKE, v_BTKE))
    heads_first = (x.transpose(0, 2, 1, 3) for x in (q_BTHE, k_BTKE, v_BTKE))
    return _attention(*heads_first).transpose(0, 2, 1, 3)


def _probs(q_BHTE, k_BHTE):
    T = q_BHTE.shape[2]
    scores = jnp.einsum("bhqe,bhke->bhqk", q_BHTE, k_BHTE).astype(jnp.float32) * q_BHTE.shape[-1] ** -0.5
    # a [T, T] bias fuses; a select did not
    scores = scores + jnp.where(jnp.tril(jnp.ones((T, T), bool)), 0.0, -jnp.inf)
    return jax.lax.optimization_barrier(jax.nn.softmax(scores, axis=-1).astype(q_BHTE.dtype))


@jax.custom_vjp
def _attention(q_BHTE, k_BHTE, v_BHTE):
    return jnp.einsum("bhqk,bhke->bhqe", _probs(q_BHTE, k_BHTE), v_BHTE)


def _forward(q, k, v):
    p_BHTT = _probs(q, k)
    return jnp.einsum("bhqk,bhke->bhqe", p_BHTT, v), (q, k, v, p_BHTT)


def _backward(residuals, dout_BHTE):
    q, k, v, p = residuals
    dp = jnp.einsum("bhqe,bhke->bhqk", dout_BHTE, v)
    ds = (jax.lax.optimization_barrier(p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True)))
          * q.shape[-1] ** -0.5)
    # dv and dk contract over queries: with the small [.., E, T] operand transposed first, both are
    # plain matmuls for XLA:CPU's fast dot path instead of slow transposed-operand ones.
    dout_BHET, q_BHET = (jax.lax.optimization_barrier(x.swapaxes(2, 3)) for x in (dout_BHTE, q))
    dv_BHEK = jnp.einsum("bheq,bhqk->bhek", dout_BHET, p)
    dk_BHEK = jnp.einsum("bheq,bhqk->bhek", q_BHET, ds)
    return jnp.einsum("bhqk,bhke->bhqe", ds, k), dk_BHEK.swapaxes(2, 3), dv_BHEK.swapaxes(2, 3)


_attention.defvjp(_forward, _backward)
