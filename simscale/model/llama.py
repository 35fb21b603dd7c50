"""A pure-functional LLaMA: RMSNorm, rotary embeddings, SwiGLU, (grouped-query) causal attention.

    params = init(rng, cfg)            # plain dict pytree of float arrays
    logits_BTV = apply(params, tokens_BT, cfg)
    axes = logical_axes(cfg)           # same tree; each leaf a tuple of logical axis names

Layers are stacked on a leading 'layers' axis and run with `jax.lax.scan`, so
compile time does not grow with depth (with the CPU kernels, `model.kernels`, they are unrolled,
which runs faster on CPUs). `cfg` is the `model` section of a run config
(simscale.config.model_config) or any object with the same attributes.

Mixed precision (torch autocast's policy, as the paper trained): `model.compute_dtype` is the
dtype of every matmul's inputs (projections, attention's two products, the output head); the
residual stream, norms, rotary, SwiGLU's elementwise work, attention's softmax and the logits
are float32, and parameters keep `model.param_dtype`.
Shape letters: B batch, T time, D hidden, H query heads, K kv heads, E head dim,
F intermediate, V vocabulary, L layers.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from simscale.model import backend, cpu_kernels

# Logical axis names of every parameter; simscale.train.mesh maps them to mesh axes.
_LAYER_AXES = {
    "attn_norm": ("layers", "norm"),
    "wq": ("layers", "embed", "heads", "head_dim"),
    "wk": ("layers", "embed", "kv_heads", "head_dim"),
    "wv": ("layers", "embed", "kv_heads", "head_dim"),
    "wo": ("layers", "heads", "head_dim", "embed"),
    "mlp_norm": ("layers", "norm"),
    "w_gate": ("layers", "embed", "mlp"),
    "w_up": ("layers", "embed", "mlp"),
    "w_down": ("layers", "mlp", "embed"),
}


def kv_heads(cfg) -> int:
    return cfg.kv_heads or cfg.heads


def intermediate(cfg) -> int:
    return cfg.intermediate or 4 * cfg.hidden


def head_dim(cfg) -> int:
    if cfg.hidden % cfg.heads:
        raise ValueError(f"model.hidden={cfg.hidden} is not divisible by model.heads={cfg.heads}")
    if cfg.heads % kv_heads(cfg):
        raise ValueError(f"model.heads={cfg.heads} is not divisible by model.kv_heads={cfg.kv_heads}")
    return cfg.hidden // cfg.heads


def param_shapes(cfg) -> dict:
    """Shapes of every parameter, as a tree like init's."""
    D, L, V, F = cfg.hidden, cfg.layers, cfg.vocab_size, intermediate(cfg)
    H, K, E = cfg.heads, kv_heads(cfg), head_dim(cfg)
    shapes = {
        "embed": (V, D),
        "layers": {
            "attn_norm": (L, D),
            "wq": (L, D, H, E),
            "wk": (L, D, K, E),
            "wv": (L, D, K, E),
            "wo": (L, H, E, D),
            "mlp_norm": (L, D),
            "w_gate": (L, D, F),
            "w_up": (L, D, F),
            "w_down": (L, F, D),
        },
        "final_norm": (D,),
    }
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, V)
    return shapes


def logical_axes(cfg) -> dict:
    axes = {"embed": ("vocab", "embed"), "layers": dict(_LAYER_AXES), "final_norm": ("norm",)}
    if not cfg.tie_embeddings:
        axes["lm_head"] = ("embed", "vocab")
    return axes


def init(rng: jax.Array, cfg) -> dict:
    """Normal(0, init_std) matrices and unit norm scales, as Hugging Face LLaMA initialises.

    The matrices are consecutive slices of one normal draw: one threefry computation instead of
    one per matrix, which XLA:CPU compiled in 1.5 s instead of 11.6 s (hidden 64, 4 layers)."""
    paths_shapes, treedef = jax.tree.flatten_with_path(
        param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
    dtype = jnp.dtype(cfg.param_dtype)
    is_norm = ["norm" in jax.tree_util.keystr(path) for path, _ in paths_shapes]
    sizes = [math.prod(shape) for _, shape in paths_shapes]
    draw = cfg.init_std * jax.random.normal(rng, (sum(n for n, norm in zip(sizes, is_norm) if not norm),),
                                            dtype)
    values, start = [], 0
    for (_, shape), n, norm in zip(paths_shapes, sizes, is_norm):
        if norm:
            values.append(jnp.ones(shape, dtype))
        else:
            values.append(draw[start:start + n].reshape(shape))
            start += n
    return jax.tree.unflatten(treedef, values)


def compute_dtype(cfg) -> jnp.dtype:
    return backend.compute_dtype(cfg)


def rms_norm(x, scale, eps):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * scale).astype(x.dtype)


def rotary_tables(T: int, E: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [T, 1, E] of the rotation angles, as numpy constants built while tracing (computed
    in-graph, XLA recomputed them inside every fusion that used them)."""
    inv_freq = 1.0 / theta ** (np.arange(0, E, 2) / E)
    angles_TE = np.concatenate([np.arange(T)[:, None] * inv_freq] * 2, axis=-1)
    return tuple(f(angles_TE)[:, None, :].astype(np.float32) for f in (np.cos, np.sin))


def rotary(x_BTNE, theta):
    """Rotate-half rotary embedding (the Hugging Face LLaMA layout) at positions 0..T-1."""
    E = x_BTNE.shape[-1]
    cos, sin = rotary_tables(x_BTNE.shape[1], E, theta)
    x = x_BTNE.astype(jnp.float32)
    half = E // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(x_BTNE.dtype)


def project(x, w, cfg, n_in: int = 1):
    """x contracted with w over x's last / w's first n_in axes: inputs in the compute dtype, result
    float32; the hand-differentiated CPU kernel with model.kernels=cpu."""
    dt = compute_dtype(cfg)
    x, w = x.astype(dt), w.astype(dt)
    out = cpu_kernels.project(x, w, n_in) if backend.uses_cpu_kernels(cfg) else jnp.tensordot(x, w, n_in)
    return out.astype(jnp.float32)


def attention(q, k, v, cfg):
    """Causal attention, products in the compute dtype, softmax float32, result float32: the CPU
    kernel or jax.nn.dot_product_attention (XLA's or cuDNN's), as backend.choose_attention decides."""
    dt = compute_dtype(cfg)
    q, k, v = (x.astype(dt) for x in (q, k, v))
    impl = backend.attention_implementation(cfg, dt, q.shape[-1])
    if impl == "cpu":
        out = cpu_kernels.causal_attention(q, k, v)
    else:
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
    return out.astype(jnp.float32)


def block(x_BTD, layer, cfg):
    """One transformer block on the float32 residual: x + attn(norm(x)), then x + swiglu(norm(x))."""
    h = rms_norm(x_BTD, layer["attn_norm"], cfg.norm_eps)
    q = rotary(project(h, layer["wq"], cfg), cfg.rope_theta)  # [B, T, H, E]
    k = rotary(project(h, layer["wk"], cfg), cfg.rope_theta)  # [B, T, K, E]
    v = project(h, layer["wv"], cfg)
    attn_BTHE = attention(q, k, v, cfg)
    x_BTD = x_BTD + project(attn_BTHE, layer["wo"], cfg, n_in=2)
    h = rms_norm(x_BTD, layer["mlp_norm"], cfg.norm_eps)
    gate = jax.nn.silu(project(h, layer["w_gate"], cfg))
    up = project(h, layer["w_up"], cfg)
    return x_BTD + project(gate * up, layer["w_down"], cfg)


def hidden_states(params, tokens_BT, cfg):
    """Final normalised hidden states [B, T, D], float32."""
    x = params["embed"][tokens_BT].astype(jnp.float32)

    def step(x, layer):
        return block(x, layer, cfg), None

    if cfg.remat:
        step = jax.checkpoint(step, policy=jax.checkpoint_policies.nothing_saveable)
    if backend.uses_cpu_kernels(cfg):  # unrolled: XLA:CPU spends ~10% of a step on scan's stacked buffers
        for i in range(cfg.layers):
            x, _ = step(x, jax.tree.map(lambda p: p[i], params["layers"]))
    else:
        x, _ = jax.lax.scan(step, x, params["layers"])
    return rms_norm(x, params["final_norm"], cfg.norm_eps)


def output_head(params, cfg):
    """The [D, V] output projection (the input embedding transposed when tied)."""
    return params["embed"].T if cfg.tie_embeddings else params["lm_head"]


def apply(params, tokens_BT, cfg):
    """Next-token logits [B, T, V] in float32 for int tokens [B, T]."""
    dt = compute_dtype(cfg)
    h_BTD = hidden_states(params, tokens_BT, cfg).astype(dt)
    return jnp.einsum("btd,dv->btv", h_BTD, output_head(params, cfg).astype(dt)).astype(jnp.float32)
