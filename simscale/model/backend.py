"""Every choice the model makes from the backend, in one place (docs/training.md lists them).

- `uses_cpu_kernels(cfg)`: `model.kernels` auto | cpu | generic. `cpu`: the hand-differentiated
  projections and attention of simscale.model.cpu_kernels and an unrolled layer loop; `generic`:
  `jnp.tensordot`, `jax.nn.dot_product_attention` and `lax.scan` over layers (the accelerator
  path). `auto`: cpu on the CPU backend, generic elsewhere.
- `compute_dtype(cfg)`: the dtype of matmul inputs; `auto` is bfloat16 on GPU/TPU, float32 on CPU.
- `choose_attention(...)`: which attention kernel runs (a pure function of backend, dtype, head
  dim, GPU generation), and why.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from simscale.config import ConfigError

log = logging.getLogger("simscale.model")

KERNELS = ("auto", "cpu", "generic")  # model.kernels (simscale.validation refuses others)
ATTENTION = ("auto", "xla", "cudnn")  # model.attention
_CUDNN_DTYPES = ("bfloat16", "float16")
_logged: set[str] = set()


def uses_cpu_kernels(cfg, backend: str | None = None) -> bool:
    kernels = cfg.kernels
    if kernels == "auto":
        return (backend or jax.default_backend()) == "cpu"
    return kernels == "cpu"


def compute_dtype(cfg, backend: str | None = None) -> jnp.dtype:
    if cfg.compute_dtype == "auto":
        return jnp.dtype(jnp.bfloat16 if (backend or jax.default_backend()) in ("gpu", "tpu")
                         else jnp.float32)
    return jnp.dtype(cfg.compute_dtype)


def cudnn_unsupported(dtype, head_dim: int, capability: str | None) -> str | None:
    """Why cuDNN's fused attention cannot run these inputs (None: it can). The limits are those
    jax.nn.dot_product_attention checks: bf16/f16, head dim a multiple of 8 and at most 128
    (256 from Hopper, compute capability 9.0), an Ampere or newer GPU (8.0)."""
    if jnp.dtype(dtype).name not in _CUDNN_DTYPES:
        return f"dtype {jnp.dtype(dtype).name} (cuDNN takes {' or '.join(_CUDNN_DTYPES)})"
    if capability is None:
        return "no CUDA GPU"
    cc = tuple(int(x) for x in capability.split("."))
    if cc < (8, 0):
        return f"compute capability {capability} (cuDNN flash attention needs 8.0 or newer)"
    limit = 256 if cc >= (9, 0) else 128
    if head_dim % 8 or head_dim > limit:
        return f"head dim {head_dim} (cuDNN needs a multiple of 8, at most {limit})"
    return None


def choose_attention(requested: str, backend: str, dtype, head_dim: int, cpu_kernels: bool,
                     capability: str | None = None) -> tuple[str, str]:
    """(implementation, reason): 'cpu' (simscale's CPU kernel), 'xla' or 'cudnn' (jax.nn's).

    auto: the CPU kernel with cpu kernels; on GPUs cuDNN where it supports the inputs, else XLA with
    the reason; XLA elsewhere. 'cudnn' where unsupported raises ConfigError naming the reason.
    """
    if requested == "xla":
        return "xla", "model.attention=xla"
    why_not = "backend " + backend if backend != "gpu" else cudnn_unsupported(dtype, head_dim, capability)
    if requested == "cudnn":
        if why_not:
            raise ConfigError(f"model.attention=cudnn is not supported here: {why_not}; use auto or xla")
        return "cudnn", "model.attention=cudnn"
    if cpu_kernels:
        return "cpu", "cpu kernels"
    if why_not:
        return "xla", f"cuDNN attention not used: {why_not}"
    return "cudnn", "cuDNN supports these inputs"


def gpu_capability() -> str | None:
    device = jax.devices()[0]
    return getattr(device, "compute_capability", None) if device.platform == "gpu" else None


def attention_implementation(cfg, dtype, head_dim: int) -> str:
    """choose_attention for this process's backend; each distinct fallback is logged once."""
    backend = jax.default_backend()
    impl, reason = choose_attention(cfg.attention, backend, dtype, head_dim, uses_cpu_kernels(cfg, backend),
                                    gpu_capability() if backend == "gpu" else None)
    if backend == "gpu" and reason not in _logged:
        _logged.add(reason)
        log.warning("attention: %s (%s)", impl, reason)
    return impl
