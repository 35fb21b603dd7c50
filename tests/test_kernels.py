"""The accelerator path (model.kernels=generic: tensordot, jax.nn attention, lax.scan over layers)
against the CPU kernels, run on CPU; the mixed-precision policy; the attention choice."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simscale.config import ConfigError, run_config
from simscale.data import loader
from simscale.model import backend, llama
from simscale.model import loss as loss_lib
from simscale.train import mesh as mesh_lib
from simscale.train import step as step_lib
from simscale import validation

# Measured on this CPU (jax 0.10.2, float32, 3 SGD steps): losses differ by <= 6e-8 relative, gradients
# by <= 4.5e-7 of the largest entry of their leaf; the bounds leave a margin over that.
LOSS_RTOL, GRAD_RTOL = 1e-6, 2e-6


def tiny(**model):
    cfg = run_config()
    cfg.model.update(dict(vocab_size=64, hidden=32, layers=2, heads=4, max_len=16, **model))
    cfg.train.update(dict(batch_size=8, seq_len=16, steps=4, lr=1e-2, warmup_steps=2))
    return cfg


@functools.lru_cache(maxsize=None)
def _grad_fn(kernels, remat, kv_heads, compute_dtype="float32"):
    cfg = tiny(kernels=kernels, remat=remat, kv_heads=kv_heads, compute_dtype=compute_dtype)
    loss = functools.partial(loss_lib.mean_loss, model_cfg=cfg.model, loss_chunk=cfg.train.loss_chunk)
    return jax.jit(jax.value_and_grad(loss)), cfg


def _sgd_trajectory(kernels, remat, kv_heads, steps=3, lr=0.5):
    """(losses, gradients) of `steps` plain SGD steps on the train stream's first batches."""
    grad_fn, cfg = _grad_fn(kernels, remat, kv_heads)
    params = llama.init(jax.random.key(0), cfg.model)
    losses, grads = [], []
    for tokens in itertools.islice(loader.batches(None, cfg, "train"), steps):
        loss, g = grad_fn(params, jnp.asarray(tokens))
        losses.append(float(loss))
        grads.append(g)
        params = jax.tree.map(lambda p, d: p - lr * d, params, g)
    return losses, grads


@pytest.mark.parametrize("remat,kv_heads", [(False, None), (True, 2)], ids=["plain", "remat_gqa"])
def test_generic_path_matches_cpu_kernels_over_training_steps(remat, kv_heads):
    ref_losses, ref_grads = _sgd_trajectory("cpu", remat, kv_heads)
    losses, grads = _sgd_trajectory("generic", remat, kv_heads)
    assert ref_losses[-1] < ref_losses[0] - 0.05  # it trains: the steps are not all at the start point
    np.testing.assert_allclose(losses, ref_losses, rtol=LOSS_RTOL)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(a, b, rtol=0, atol=GRAD_RTOL * scale)


def test_kernels_switch_picks_the_path():
    """The generic path's jaxpr holds a scan and jax.nn's attention; the CPU path's neither."""
    def primitives(kernels):
        cfg = tiny(kernels=kernels).model
        params = jax.eval_shape(lambda k: llama.init(k, cfg), jax.random.key(0))
        return {e.primitive.name for e in _equations(jax.make_jaxpr(
            lambda p: llama.apply(p, jnp.zeros((2, 16), jnp.int32), cfg))(params).jaxpr)}

    generic, cpu = primitives("generic"), primitives("cpu")
    assert "scan" in generic and "scan" not in cpu
    assert "custom_vjp_call" in cpu or "custom_vjp_call_jaxpr" in cpu
    assert not any(p.startswith("custom_vjp") for p in generic)
    assert backend.uses_cpu_kernels(tiny().model, "cpu") and not backend.uses_cpu_kernels(tiny().model, "gpu")
    assert ("model.kernels='fast': choose one of ('auto', 'cpu', 'generic')"
            in validation.problems(tiny(kernels="fast"), 1))


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its equations (scan, remat, custom_vjp)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


@pytest.mark.parametrize("kernels", ["cpu", "generic"])
def test_bfloat16_compute_keeps_residual_norms_softmax_and_loss_float32(kernels):
    cfg = tiny(kernels=kernels, compute_dtype="bfloat16", kv_heads=2)
    params = llama.init(jax.random.key(0), cfg.model)
    tokens = jnp.zeros((2, 17), jnp.int32)
    loss = functools.partial(loss_lib.mean_loss, model_cfg=cfg.model, loss_chunk=cfg.train.loss_chunk)
    eqns = list(_equations(jax.make_jaxpr(jax.value_and_grad(loss))(params, tokens).jaxpr))
    # Every forward matmul (7 projections + 2 attention products a block) takes bfloat16 (in the backward,
    # jax.nn's XLA attention multiplies its float32 score gradient by bfloat16 q and k: jax's own autodiff).
    forward = list(_equations(jax.make_jaxpr(loss)(params, tokens).jaxpr))
    dots = [e for e in forward if e.primitive.name == "dot_general"]
    assert len(dots) >= 9 and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    # The residual stream: every [B, T, D] sum (x + attention, x + MLP, and their gradients) is float32.
    residual = [e for e in eqns if e.primitive.name == "add" and e.outvars[0].aval.shape == (2, 16, 32)]
    assert residual and all(e.outvars[0].aval.dtype == jnp.float32 for e in residual)
    for name in ("rsqrt", "exp", "log"):  # RMSNorm, the softmaxes, the loss's log-sum-exp
        found = [e for e in eqns if e.primitive.name == name]
        assert found and all(e.outvars[0].aval.dtype == jnp.float32 for e in found), name
    value, grads = jax.jit(jax.value_and_grad(loss))(params, tokens)
    assert value.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


# bfloat16 vs float32 compute, 40 AdamW steps of the tiny model from one init (the loss falls from
# ln 64 = 4.17 to 2.17): the means of the last 10 losses measured 2.16841 (float32) and 2.16889
# (bfloat16), a gap of 0.0005 nats; the bound is 20x that.
BF16_GAP = 0.01


def test_bfloat16_smoke_run_ends_near_float32():
    mesh = mesh_lib.make_mesh(tiny().mesh)
    ends = {}
    for dtype in ("float32", "bfloat16"):
        cfg = tiny(compute_dtype=dtype)
        cfg.train.steps = 40
        prog = step_lib.build(cfg, 40, mesh)
        state, losses = prog.init(0), []
        for tokens in itertools.islice(loader.batches(None, cfg, "train"), 40):
            state, metrics = prog.train(state, jax.device_put(tokens, prog.batch_sharding))
            losses.append(float(metrics["loss"]))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["opt_state"]) if x.ndim)
        ends[dtype] = (losses[0], float(np.mean(losses[-10:])))
    assert ends["float32"][1] < ends["float32"][0] - 1.0  # the run learns
    assert abs(ends["bfloat16"][1] - ends["float32"][1]) < BF16_GAP, ends


@pytest.mark.parametrize("requested,backend_name,dtype,head_dim,cpu_kernels,capability,expected", [
    ("auto", "cpu", "float32", 16, True, None, "cpu"),
    ("auto", "cpu", "float32", 16, False, None, "xla"),
    ("auto", "tpu", "bfloat16", 64, False, None, "xla"),
    ("auto", "gpu", "bfloat16", 64, False, "9.0", "cudnn"),
    ("auto", "gpu", "float16", 128, False, "8.0", "cudnn"),
    ("auto", "gpu", "float32", 64, False, "9.0", "xla"),  # float32: cuDNN flash attention takes bf16/f16
    ("auto", "gpu", "bfloat16", 4, False, "9.0", "xla"),  # hidden 32 / 8 heads: head dim 4
    ("auto", "gpu", "bfloat16", 256, False, "8.0", "xla"),  # 256 needs Hopper
    ("auto", "gpu", "bfloat16", 256, False, "9.0", "cudnn"),
    ("auto", "gpu", "bfloat16", 64, False, "7.5", "xla"),  # Turing
    ("xla", "gpu", "bfloat16", 64, False, "9.0", "xla"),
    ("cudnn", "gpu", "bfloat16", 64, False, "9.0", "cudnn"),
])
def test_attention_choice(requested, backend_name, dtype, head_dim, cpu_kernels, capability, expected):
    impl, reason = backend.choose_attention(requested, backend_name, jnp.dtype(dtype), head_dim, cpu_kernels,
                                            capability)
    assert impl == expected
    if requested == "auto" and backend_name == "gpu" and impl == "xla":
        assert reason.startswith("cuDNN attention not used: ") and len(reason.splitlines()) == 1


@pytest.mark.parametrize("backend_name,dtype,head_dim,capability,why", [
    ("cpu", "float32", 16, None, "backend cpu"),
    ("gpu", "float32", 16, "9.0", "dtype float32"),
    ("gpu", "bfloat16", 4, "9.0", "head dim 4"),
])
def test_forced_cudnn_fails_clearly_where_unsupported(backend_name, dtype, head_dim, capability, why):
    with pytest.raises(ConfigError, match=f"model.attention=cudnn is not supported here: {why}"):
        backend.choose_attention("cudnn", backend_name, jnp.dtype(dtype), head_dim, False, capability)


def test_forced_cudnn_on_this_cpu_fails_at_trace_time():
    cfg = tiny(attention="cudnn").model
    params = jax.eval_shape(lambda k: llama.init(k, cfg), jax.random.key(0))
    with pytest.raises(ConfigError, match="model.attention=cudnn is not supported here: backend cpu"):
        jax.eval_shape(lambda p: llama.apply(p, jnp.zeros((1, 16), jnp.int32), cfg), params)
