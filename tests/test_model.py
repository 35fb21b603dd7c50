"""LLaMA forward pass and parameter/FLOP accounting."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simscale.config import model_config
from simscale.model import apply, init, logical_axes
from simscale.model import counting

PAPER_SHAPES = [(h, l) for h in (32, 64, 128, 256, 512, 1024) for l in (2, 4, 8)]


def paper_count(hidden, layers, vocab=15000):
    """Closed form for 8 heads, F = 4D, untied: 2VD + L(4D^2 + 12D^2 + 2D) + D."""
    return 2 * vocab * hidden + layers * (16 * hidden**2 + 2 * hidden) + hidden


def tiny(**overrides):
    cfg = model_config()
    cfg.update({**dict(vocab_size=97, hidden=32, layers=2, heads=4, max_len=16), **overrides})
    return cfg


def shape_cfg(hidden, layers):
    cfg = model_config()
    cfg.update(dict(hidden=hidden, layers=layers))
    return cfg


def test_paper_endpoints():
    assert counting.params_total(shape_cfg(32, 2)) == 992_928
    assert counting.params_total(shape_cfg(1024, 8)) == 164_955_136


@pytest.mark.parametrize("hidden,layers", PAPER_SHAPES)
def test_paper_parameter_counts(hidden, layers):
    cfg = shape_cfg(hidden, layers)
    assert counting.params_total(cfg) == paper_count(hidden, layers)
    assert counting.params_nonembedding(cfg) == paper_count(hidden, layers) - 2 * 15000 * hidden


def test_counts_match_initialised_params():
    for cfg in (tiny(), tiny(tie_embeddings=True, kv_heads=2, intermediate=48)):
        params = init(jax.random.PRNGKey(0), cfg)
        assert sum(x.size for x in jax.tree.leaves(params)) == counting.params_total(cfg)
        axes = logical_axes(cfg)
        for x, names in zip(jax.tree.leaves(params), jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple))):
            assert x.ndim == len(names)


def test_flops_conventions_by_hand():
    cfg = shape_cfg(64, 2)  # V=15000, D=64, L=2, H=8, E=8, F=256, T=128
    n = paper_count(64, 2)
    n_ne = n - 2 * 15000 * 64
    T = 128
    assert counting.flops_per_token(cfg, T, "6n") == 6 * n
    assert counting.flops_per_token(cfg, T, "kaplan") == 6 * n_ne
    assert counting.flops_per_token(cfg, T, "kaplan_attention") == 6 * n_ne + 6 * 2 * 128 * 64
    assert counting.flops_per_token(cfg, T, "palm") == 6 * n + 12 * 2 * 64 * 128
    per_layer = (2 * T * 64 * 3 * 64 + 2 * T * T * 64 + 3 * 8 * T * T + 2 * T * T * 64
                 + 2 * T * 64 * 64 + 2 * T * 3 * 64 * 256)
    forward = 2 * T * 15000 * 64 * 2 + 2 * per_layer
    assert counting.flops_per_token(cfg, T, "chinchilla") == pytest.approx(3 * forward / T)
    with pytest.raises(ValueError, match="unknown FLOPs convention"):
        counting.flops_per_token(cfg, T, "bogus")


def test_mfu_peaks():
    assert counting.mfu(494.5e12, "NVIDIA H100 80GB HBM3") == pytest.approx(0.5)
    assert counting.device_peak_flops("TPU v5 lite") == 197e12
    assert counting.mfu(1e9, "cpu") is None


def test_causality():
    cfg = tiny()
    params = init(jax.random.PRNGKey(0), cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, cfg.vocab_size)
    changed = tokens.at[:, 9:].set((tokens[:, 9:] + 5) % cfg.vocab_size)
    a, b = apply(params, tokens, cfg), apply(params, changed, cfg)
    np.testing.assert_allclose(a[:, :9], b[:, :9], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, 9:], b[:, 9:])


def test_grouped_query_and_remat_paths_agree_in_shape_and_value():
    cfg = tiny(kv_heads=2)
    params = init(jax.random.PRNGKey(0), cfg)
    tokens = jnp.arange(32).reshape(2, 16) % cfg.vocab_size
    logits = apply(params, tokens, cfg)
    assert logits.shape == (2, 16, cfg.vocab_size) and logits.dtype == jnp.float32
    remat = tiny(kv_heads=2, remat=True)
    np.testing.assert_allclose(apply(params, tokens, remat), logits, rtol=1e-5, atol=1e-6)


def test_bad_head_count_names_the_key():
    with pytest.raises(ValueError, match="model.hidden=30 is not divisible by model.heads=4"):
        init(jax.random.PRNGKey(0), tiny(hidden=30))
