"""Parameter counts, training FLOPs per token under named conventions, and MFU.

Symbols: V vocabulary, D hidden, L layers, H heads, K kv heads, E head dim,
F intermediate, T context length (n_ctx), N parameters.
"""
from __future__ import annotations

import math

from simscale.model.llama import head_dim, intermediate, kv_heads, param_shapes

# Dense bf16 peak FLOP/s of one JAX device by device kind (substring of jax's device_kind, lower case;
# the first key found wins, so a variant comes before its family: "NVIDIA H100 PCIe" 756, the SXM
# "NVIDIA H100 80GB HBM3" 989). Vendor specs: NVIDIA's H100/H200/A100 datasheets (A100: 312 TFLOP/s
# bf16 dense); Google Cloud's TPU system-architecture pages (v2: 180 TFLOP/s a v2-8 board of 4 chips,
# 8 TensorCores, each core its own JAX device: 22.5; v4 275 and v5p 459 a chip; v5e 197 a chip).
# NVIDIA's T4 datasheet gives 65 TFLOP/s fp16 but Turing has no bfloat16 tensor cores, so XLA runs
# the bf16 matmuls in float32: its 8.1 TFLOP/s float32 peak is the one that bounds simscale there.
DEVICE_PEAK_FLOPS = {
    "tesla t4": 8.1e12,
    "tpu v2": 22.5e12,
    "h200": 989e12,
    "h100 pcie": 756e12,
    "h100": 989e12,
    "a100": 312e12,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6": 918e12,
}


def params_total(cfg) -> int:
    """Every parameter: embeddings, output head (unless tied), blocks, norms."""
    shapes = param_shapes(cfg)
    leaves = [shapes["embed"], shapes["final_norm"], *shapes["layers"].values()]
    if "lm_head" in shapes:
        leaves.append(shapes["lm_head"])
    return sum(math.prod(s) for s in leaves)


def params_embedding(cfg) -> int:
    """The vocabulary matrices: input embedding, plus the output head when untied (V*D each)."""
    return cfg.vocab_size * cfg.hidden * (1 if cfg.tie_embeddings else 2)


def params_nonembedding(cfg) -> int:
    """Kaplan et al.'s N: everything but the vocabulary matrices."""
    return params_total(cfg) - params_embedding(cfg)


def _attention_width(cfg) -> int:
    return cfg.heads * head_dim(cfg)


def flops_6n(cfg, seq_len: int) -> float:
    """C = 6 * N, N = every parameter (params_total, the input embedding included): the plain 6ND."""
    return 6.0 * params_total(cfg)


def flops_kaplan(cfg, seq_len: int) -> float:
    """Kaplan et al. (2020), section 2.1: C = 6 * N, N = params_nonembedding (no vocabulary matrix,
    neither the input embedding nor an untied output head)."""
    return 6.0 * params_nonembedding(cfg)


def flops_kaplan_attention(cfg, seq_len: int) -> float:
    """Kaplan et al. table 1 with attention: 6 * N + 6 * L * T * D_attn, N = params_nonembedding."""
    return flops_kaplan(cfg, seq_len) + 6.0 * cfg.layers * seq_len * _attention_width(cfg)


def params_matmul(cfg) -> int:
    """The parameters that multiply activations: all but the input embedding, a lookup with no
    FLOPs (a tied embedding counts once, as the output head's matmul)."""
    return params_total(cfg) - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.hidden)


def flops_palm(cfg, seq_len: int) -> float:
    """PaLM (Chowdhery et al. 2022) appendix B: 6 * N + 12 * L * H * Q * T, with N = params_matmul
    (the output head counted, the untied input embedding not) and Q the head dimension."""
    return sum(flops_palm_parts(cfg, seq_len).values())


def flops_palm_parts(cfg, seq_len: int) -> dict[str, float]:
    """flops_palm per token split by the matmuls that execute it: the output head (6 V D), attention's
    QK and PV (12 L H Q T) and the layers' projections (the rest of 6 N, norm scales included)."""
    head = 6.0 * cfg.vocab_size * cfg.hidden
    return {"projections": 6.0 * params_matmul(cfg) - head, "output head": head,
            "attention": 12.0 * cfg.layers * _attention_width(cfg) * seq_len}


def flops_chinchilla(cfg, seq_len: int) -> float:
    """Chinchilla appendix F, per token, backward = 2 x forward (so 3 x forward).

    Forward per sequence of T tokens:
      embeddings            2 * T * V * D
      per layer:
        q, k, v projections 2 * T * D * (H + 2K) * E
        attention logits    2 * T * T * H * E
        softmax             3 * H * T * T
        softmax @ values    2 * T * T * H * E
        output projection   2 * T * H * E * D
        SwiGLU MLP          2 * T * 3 * D * F
      output logits         2 * T * D * V
    Norms and rotary embeddings are not counted, as in the appendix.
    """
    T, V, D, L = seq_len, cfg.vocab_size, cfg.hidden, cfg.layers
    H, K, E, F = cfg.heads, kv_heads(cfg), head_dim(cfg), intermediate(cfg)
    per_layer = (
        2 * T * D * (H + 2 * K) * E
        + 2 * T * T * H * E
        + 3 * H * T * T
        + 2 * T * T * H * E
        + 2 * T * H * E * D
        + 2 * T * 3 * D * F
    )
    forward = 2 * T * V * D + L * per_layer + 2 * T * D * V
    return 3.0 * forward / T


FLOPS_CONVENTIONS = {
    "6n": flops_6n,
    "kaplan": flops_kaplan,
    "kaplan_attention": flops_kaplan_attention,
    "chinchilla": flops_chinchilla,
    "palm": flops_palm,
}


def flops_per_token(cfg, seq_len: int, convention: str = "chinchilla") -> float:
    """Training FLOPs per token (forward + backward) under a named convention."""
    if convention not in FLOPS_CONVENTIONS:
        raise ValueError(f"unknown FLOPs convention {convention!r}; choose from {sorted(FLOPS_CONVENTIONS)}")
    return FLOPS_CONVENTIONS[convention](cfg, seq_len)


def all_flops_per_token(cfg, seq_len: int) -> dict[str, float]:
    return {name: fn(cfg, seq_len) for name, fn in FLOPS_CONVENTIONS.items()}


def device_peak_flops(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of one device, or None when the kind is not in the table (CPUs)."""
    kind = device_kind.lower()
    for key, peak in DEVICE_PEAK_FLOPS.items():
        if key in kind:
            return peak
    return None


def mfu(tokens_per_s: float, cfg, seq_len: int, device_kind: str, n_devices: int = 1) -> float | None:
    """Model FLOPs utilisation as PaLM (appendix B) defines it: flops_palm per token x tokens/s over the
    devices' dense peak; None for a device kind not in the table (CPUs).

    Always the PaLM count, whatever `train.flops_convention` says: it is the matmul work a step
    executes, where Chinchilla's count adds the input-embedding lookup and the softmax (at vocabulary
    5000 and hidden 128 it is 1.35x PaLM's, which would inflate an MFU by as much)."""
    peak = device_peak_flops(device_kind)
    return None if peak is None else tokens_per_s * flops_palm(cfg, seq_len) / (peak * n_devices)
