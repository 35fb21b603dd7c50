"""The training loss: next-token cross-entropy, plain or fused with the output head.

    losses_BT = token_losses(params, tokens_BT1, cfg)      # nats per next token
    loss = mean_loss(params, tokens_BT1, cfg, loss_chunk)  # what training differentiates

`fused_head_loss` is a kernel: the [N, V] logits are made and differentiated chunk by chunk
(its backward pass only scales gradients computed in the forward one), 2-3x faster on CPU.
Shape letters as in simscale.model.llama; N rows (B x T), C chunks, M rows of a chunk.
`n_vocab` (a packed group's replica whose vocabulary was padded to the group's, simscale.train.packed):
logits of ids >= n_vocab are left out of the softmax, so losses and gradients equal the unpadded model's.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from simscale.model import llama


def vocab_masked(logits_XV, n_vocab):
    """Logits of ids >= n_vocab set to -inf (None: unchanged)."""
    if n_vocab is None:
        return logits_XV
    return jnp.where(jnp.arange(logits_XV.shape[-1]) < n_vocab, logits_XV, -jnp.inf)


def cross_entropy(logits_BTV, targets_BT, n_vocab=None):
    """Nats of each target under float32 logits: logsumexp(logits) - logits[target], [B, T]."""
    logits_BTV = vocab_masked(logits_BTV, n_vocab)
    target_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits_BTV, axis=-1) - target_BT


def token_losses(params, tokens_BT1, model_cfg, n_vocab=None):
    """Cross-entropy in nats of each next token of [B, T+1] token rows, float32 [B, T]."""
    return cross_entropy(llama.apply(params, tokens_BT1[:, :-1], model_cfg), tokens_BT1[:, 1:], n_vocab)


def _head_chunk_grads(h_ND, head_DV, targets_N, n_chunks: int, n_vocab=None):
    """Summed loss and its gradients, computed chunk by chunk so [N, V] logits never exist whole.

    Chunk c holds rows c, c + n_chunks, ...: with rows sharded over devices, every chunk stays
    spread over all of them.
    """
    N, D = h_ND.shape
    h_CMD = h_ND.reshape(N // n_chunks, n_chunks, D).swapaxes(0, 1)
    t_CM = targets_N.reshape(N // n_chunks, n_chunks).swapaxes(0, 1)

    def chunk(dhead_DV, xs):
        h_MD, t_M = xs
        logits_MV = vocab_masked(jnp.dot(h_MD, head_DV, preferred_element_type=jnp.float32), n_vocab)
        max_M1 = jnp.max(logits_MV, axis=-1, keepdims=True)
        e_MV = jnp.exp(logits_MV - max_M1)
        z_M1 = jnp.sum(e_MV, axis=-1, keepdims=True)
        target_M = jnp.take_along_axis(logits_MV, t_M[:, None], axis=-1)[:, 0]
        loss = jnp.sum(jnp.log(z_M1[:, 0]) + max_M1[:, 0] - target_M)
        d_MV = (e_MV / z_M1 - jax.nn.one_hot(t_M, e_MV.shape[-1], dtype=e_MV.dtype)).astype(h_MD.dtype)
        dhead_DV = dhead_DV + jnp.dot(h_MD.T, d_MV, preferred_element_type=jnp.float32)
        return dhead_DV, (loss, jnp.dot(d_MV, head_DV.T, preferred_element_type=jnp.float32))

    dhead, (losses, dh_CMD) = jax.lax.scan(chunk, jnp.zeros(head_DV.shape, jnp.float32), (h_CMD, t_CM))
    dh_ND = dh_CMD.swapaxes(0, 1).reshape(N, D)
    return jnp.sum(losses) / N, (dh_ND / N).astype(h_ND.dtype), (dhead / N).astype(head_DV.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def fused_head_loss(h_ND, head_DV, targets_N, n_chunks: int, n_vocab=None):
    """Mean cross-entropy of logits h @ head against targets, fused with its own gradient.

    The forward pass computes the gradients too (one exp pass per chunk, logits kept in cache),
    the backward pass only scales them: 2-3x faster than autodiff of logsumexp on CPU.
    """
    return _head_chunk_grads(h_ND, head_DV, targets_N, n_chunks, n_vocab)[0]


def _fused_fwd(h_ND, head_DV, targets_N, n_chunks, n_vocab):
    loss, dh, dhead = _head_chunk_grads(h_ND, head_DV, targets_N, n_chunks, n_vocab)
    return loss, (dh, dhead, targets_N, n_vocab)


def _integer_zeros(x):
    return None if x is None else np.zeros(np.shape(x), jax.dtypes.float0)


def _fused_bwd(n_chunks, residuals, g):
    dh, dhead, targets, n_vocab = residuals
    return ((g * dh).astype(dh.dtype), (g * dhead).astype(dhead.dtype), _integer_zeros(targets),
            _integer_zeros(n_vocab))


fused_head_loss.defvjp(_fused_fwd, _fused_bwd)


def mean_loss(params, tokens_BT1, model_cfg, loss_chunk: int = 0, n_vocab=None):
    """Mean next-token cross-entropy; loss_chunk > 0 uses fused_head_loss with chunks of ~that many tokens."""
    if loss_chunk <= 0:
        return jnp.mean(token_losses(params, tokens_BT1, model_cfg, n_vocab))
    dt = llama.compute_dtype(model_cfg)  # the head's matmul inputs; its logits and loss are float32
    h_BTD = llama.hidden_states(params, tokens_BT1[:, :-1], model_cfg).astype(dt)
    B, T, D = h_BTD.shape
    n_chunks = max(1, B * T // math.gcd(B * T, loss_chunk))
    return fused_head_loss(h_BTD.reshape(B * T, D), llama.output_head(params, model_cfg).astype(dt),
                           tokens_BT1[:, 1:].reshape(-1), n_chunks, n_vocab)
