"""LLaMA forward pass and parameter/FLOP accounting."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simscale.config import model_config
from simscale.model import apply, init, logical_axes
from simscale.model import counting

PAPER_SHAPES = [(h, layers) for h in (32, 64, 128, 256, 512, 1024) for layers in (2, 4, 8)]


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
        for x, names in zip(jax.tree.leaves(params),
                            jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple))):
            assert x.ndim == len(names)


def test_init_draws_each_matrix_independently_from_normal_init_std():
    """Matrices are slices of one normal draw: each must still be N(0, init_std) on its own and
    unrelated to the others; norm scales are ones."""
    cfg = tiny(hidden=64, init_std=0.02)
    params = init(jax.random.PRNGKey(0), cfg)
    leaves = jax.tree.leaves_with_path(params)
    mats = [np.asarray(x).ravel() for path, x in leaves if "norm" not in jax.tree_util.keystr(path)]
    for path, x in leaves:
        if "norm" in jax.tree_util.keystr(path):
            assert np.all(np.asarray(x) == 1.0), path
    for m in mats:  # n >= 4096: the sample sd is within 5% of 0.02 with probability > 0.999
        assert abs(m.std() / 0.02 - 1) < 0.05 and abs(m.mean()) < 4 * 0.02 / np.sqrt(m.size)
    n = min(m.size for m in mats)
    corr = np.corrcoef(np.stack([m[:n] for m in mats]))
    assert np.max(np.abs(corr - np.eye(len(mats)))) < 4 / np.sqrt(n)  # no two share draws
    other = init(jax.random.PRNGKey(1), cfg)
    assert not np.allclose(params["embed"], other["embed"])


def test_flops_conventions_by_hand():
    cfg = shape_cfg(64, 2)  # V=15000, D=64, L=2, H=8, E=8, F=256, T=128
    n = paper_count(64, 2)
    n_ne = n - 2 * 15000 * 64
    T = 128
    assert counting.flops_per_token(cfg, T, "6n") == 6 * n
    assert counting.flops_per_token(cfg, T, "kaplan") == 6 * n_ne
    assert counting.flops_per_token(cfg, T, "kaplan_attention") == 6 * n_ne + 6 * 2 * 128 * 64
    # PaLM: the untied input embedding (15000 x 64) is a lookup; the output head is a matmul.
    assert counting.flops_per_token(cfg, T, "palm") == 6 * (n - 15000 * 64) + 12 * 2 * 8 * 8 * 128
    per_layer = (2 * T * 64 * 3 * 64 + 2 * T * T * 64 + 3 * 8 * T * T + 2 * T * T * 64
                 + 2 * T * 64 * 64 + 2 * T * 3 * 64 * 256)
    forward = 2 * T * 15000 * 64 * 2 + 2 * per_layer
    assert counting.flops_per_token(cfg, T, "chinchilla") == pytest.approx(3 * forward / T)
    with pytest.raises(ValueError, match="unknown FLOPs convention"):
        counting.flops_per_token(cfg, T, "bogus")


def test_palm_flops_of_the_smallest_paper_model_by_hand():
    # hidden 32, 2 layers, V 15000, 8 heads of 4, T 128. Per layer: q,k,v,o 4 * 32 * 32 = 4,096,
    # SwiGLU 3 * 32 * 128 = 12,288, two norms 64: 16,448; 2 layers + final norm 32 = 32,928; the
    # output head 480,000 (the input embedding, 480,000 more, is a lookup). N = 512,928.
    # 6 N = 3,077,568; attention 12 * 2 * 8 * 4 * 128 = 98,304.
    assert counting.flops_per_token(shape_cfg(32, 2), 128, "palm") == 3_077_568 + 98_304
    tied = shape_cfg(32, 2)
    tied.tie_embeddings = True  # the one vocabulary matrix is the head's matmul: N is the same
    assert counting.flops_per_token(tied, 128, "palm") == 3_077_568 + 98_304


def test_mfu_counts_the_executed_matmuls_as_palm_does_whatever_the_runs_convention():
    cfg = shape_cfg(32, 2)  # PaLM count by hand (the test above): 3,175,872 FLOPs per token
    assert cfg.vocab_size == 15000
    tokens_per_s = 494.5e12 / 3_175_872  # half of an H100's 989 TFLOP/s
    assert counting.mfu(tokens_per_s, cfg, 128, "NVIDIA H100 80GB HBM3") == pytest.approx(0.5)
    assert counting.mfu(tokens_per_s, cfg, 128, "NVIDIA H100 80GB HBM3", n_devices=2) == pytest.approx(0.25)
    # Chinchilla's count adds the input-embedding lookup (2 x 15000 x 32 x 3 per token): an MFU by it
    # would read 0.73
    assert counting.flops_per_token(cfg, 128, "chinchilla") * tokens_per_s / 989e12 > 0.7
    assert counting.device_peak_flops("TPU v5 lite") == 197e12
    # dense bf16, the datasheets' sparse figure / 2
    assert counting.device_peak_flops("NVIDIA H200") == 989e12
    assert counting.device_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert counting.device_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert counting.device_peak_flops("TPU v2") == 180e12 / 8  # a v2-8 board: 180, over 8 TensorCores
    assert counting.device_peak_flops("Tesla T4") == 8.1e12  # float32: Turing has no bf16 tensor cores
    assert counting.mfu(1e3, cfg, 128, "cpu") is None


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


@pytest.mark.parametrize("kernels", ["cpu", "generic"])
@pytest.mark.parametrize("kv_heads,tied", [(0, False), (2, False), (2, True)])
def test_logits_match_hugging_face_llama(kv_heads, tied, kernels):
    """Same weights, same logits as transformers' LlamaForCausalLM (the paper's model code), with the
    CPU kernels and with the accelerator path (model.kernels=generic), through the export's mapping."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from simscale.export import hf_config, hf_state_dict

    cfg = tiny(kv_heads=kv_heads, rope_theta=500.0, kernels=kernels, tie_embeddings=tied)
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape),
                          init(jax.random.key(0), cfg))  # norms away from 1, so their placement matters
    hf_cfg = transformers.LlamaConfig(**hf_config(cfg), attn_implementation="eager")
    assert (hf_cfg.intermediate_size, hf_cfg.num_key_value_heads) == (4 * cfg.hidden, kv_heads or cfg.heads)
    model = transformers.LlamaForCausalLM(hf_cfg).eval()
    state = {k: torch.from_numpy(v) for k, v in hf_state_dict(params, cfg).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied: the embedding is the head
    assert not unexpected and missing == (["lm_head.weight"] if tied else [])
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, cfg.max_len))
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(apply(params, jnp.asarray(tokens), cfg)), expected, rtol=1e-4,
                               atol=1e-4)
