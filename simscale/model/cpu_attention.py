"""Causal attention with a hand-written backward pass, for CPUs.

On XLA:CPU, autodiff of `jax.nn.dot_product_attention` fuses the softmax into the
small per-head matmuls, which then run far below the machine's matmul speed. Here the
probabilities are materialised once (optimization barriers keep them out of the dot
fusions) and the backward pass reuses them. Same maths as
jax.nn.dot_product_attention(q, k, v, is_causal=True).
Shapes: B batch, T time, H query heads, K kv heads, E head dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


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
    scores = scores + jnp.where(jnp.tril(jnp.ones((T, T), bool)), 0.0, -jnp.inf)  # a [T, T] bias fuses; a select did not
    return jax.lax.optimization_barrier(jax.nn.softmax(scores, axis=-1).astype(q_BHTE.dtype))


@jax.custom_vjp
def _attention(q_BHTE, k_BHTE, v_BHTE):
    return jnp.einsum("bhqk,bhke->bhqe", _probs(q_BHTE, k_BHTE), v_BHTE)


def _forward(q, k, v):
    p_BHTT = _probs(q, k)
    return jnp.einsum("bhqk,bhke->bhqe", p_BHTT, v), (q, k, v, p_BHTT)


def _backward(residuals, dout_BHTE):
    q, k, v, p = residuals
    dv = jnp.einsum("bhqk,bhqe->bhke", p, dout_BHTE)
    dp = jnp.einsum("bhqe,bhke->bhqk", dout_BHTE, v)
    ds = jax.lax.optimization_barrier(p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))) * q.shape[-1] ** -0.5
    return jnp.einsum("bhqk,bhke->bhqe", ds, k), jnp.einsum("bhqk,bhqe->bhke", ds, q), dv


_attention.defvjp(_forward, _backward)
