"""The `paper` preset is the paper's training script (src/main.py of text-machine-lab/mini_gpt)."""
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import preset
from simscale.train import optim

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["paper", "isoflop"])
def test_paper_presets_use_the_papers_settings(name):
    cfg = preset(name)
    m, t, d = cfg.model, cfg.train, cfg.data
    # LlamaConfig defaults (rms_norm_eps=1e-6, initializer_range=0.02, tie_word_embeddings=False),
    # num_attention_heads=8, intermediate 4 x hidden (None), context 128.
    assert (m.norm_eps, m.init_std, m.tie_embeddings, m.heads, m.intermediate, m.max_len) == (
        1e-6, 0.02, False, 8, None, 128)
    # AdamW(betas=(0.9, 0.95), eps=10e-5, weight_decay=0.1) on model.parameters(); no clipping.
    assert (t.b1, t.b2, t.eps, t.weight_decay, t.decay, t.clip_norm) == (0.9, 0.95, 1e-4, 0.1, "all", 0.0)
    assert (t.schedule, t.cosine_cycles, t.lr_floor, t.lr) == ("cosine", 0.25, 0.0, 2.8e-3)
    assert (t.batch_size, t.seq_len) == (512, 128)
    assert (d.validation_unit, d.validation_fraction, d.max_train_tokens) == ("rows", 0.003, 2_100_000_000)
    if name == "paper":
        assert (t.warmup_steps, t.tokens, t.steps) == (1000, 0, 0)  # 1,000 warmup steps, one epoch


def hf_cosine(step, warmup, total, cycles=0.25):
    """transformers.get_cosine_schedule_with_warmup's lr_lambda, written out from its source."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))


def test_paper_schedule_is_hugging_faces_quarter_cosine():
    tc = preset("paper").train
    lr = optim.schedule(tc, 20_000)
    steps = np.array([1000, 1001, 5000, 12_345, 19_999])
    ours = np.array([float(lr(s)) for s in steps])
    np.testing.assert_allclose(ours, [2.8e-3 * hf_cosine(s, 1000, 20_000) for s in steps], rtol=1e-5)
    assert float(lr(19_999)) == pytest.approx(1.4e-3, rel=1e-3)  # ends at half the peak
    # Warmup: update s uses (s + 1) / 1000 of the peak, Hugging Face's s / 1000 (its first update has LR 0).
    assert float(lr(0)) == pytest.approx(2.8e-3 / 1000) and float(lr(998)) == pytest.approx(2.8e-3 * 0.999)


def test_paper_optimizer_steps_as_torch_adamw_with_the_hf_schedule():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tc = preset("paper").train
    tc.warmup_steps = 0  # the one-step warmup offset above aside, the updates must agree exactly
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = rng.normal(size=(5, 4, 3)).astype(np.float32)

    tx = optim.optimizer(tc, 5, {"w": ("embed", "mlp"), "scale": ("norm",)})
    params = {"w": jnp.asarray(w0), "scale": jnp.ones(3)}
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g), "scale": jnp.ones(3)}, state, params)
        params = {k: params[k] + updates[k] for k in params}

    w = torch.nn.Parameter(torch.tensor(w0))
    scale = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w, scale], lr=2.8e-3, betas=(0.9, 0.95), eps=10e-5, weight_decay=0.1)
    sched = transformers.get_cosine_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=5,
                                                         num_cycles=0.25)
    for g in grads:
        w.grad, scale.grad = torch.tensor(g), torch.ones(3)
        opt.step()
        sched.step()
    np.testing.assert_allclose(params["w"], w.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(params["scale"], scale.detach().numpy(), rtol=1e-5, atol=1e-7)  # decayed too
