"""Timing one compiled train step, and what it means: tokens/s, FLOPs (simscale.model.counting), MFU,
memory. Steps are dispatched back to back and waited for once per block, as the train loop runs them."""
from __future__ import annotations

import math
import time

import jax
import numpy as np

from simscale.model import backend, counting
from simscale.model.llama import head_dim
from simscale.train import mesh as mesh_lib
from simscale.train import step as step_lib

TOTAL_STEPS = 10_000  # the schedule compiled into the timed programs (its values cost nothing)
CONVENTIONS = ("chinchilla", "palm")  # the project's default, and PaLM's 6N + attention (the usual MFU)


def device_info() -> dict:
    devices = jax.devices()
    kind = devices[0].device_kind
    return dict(backend=jax.default_backend(), kind=kind, count=len(devices), jax=jax.__version__,
                peak_bf16_flops=counting.device_peak_flops(kind), capability=backend.gpu_capability())


def fixed_batch(cfg, seed: int = 0) -> np.ndarray:
    """int32 [batch, seq_len + 1] tokens drawn uniformly from the vocabulary."""
    t = cfg.train
    return np.random.default_rng(seed).integers(0, cfg.model.vocab_size, (t.batch_size, t.seq_len + 1),
                                                np.int32)


def shape_record(cfg) -> dict:
    m, t = cfg.model, cfg.train
    return dict(name=f"{m.hidden}x{m.layers}", hidden=m.hidden, layers=m.layers, heads=m.heads,
                vocab=m.vocab_size, batch=t.batch_size, seq_len=t.seq_len, params=counting.params_total(m))


def numerics(cfg) -> dict:
    """The compute dtype and attention kernel this backend gives the config, and why."""
    m = cfg.model
    dtype = backend.compute_dtype(m)
    be = jax.default_backend()
    impl, reason = backend.choose_attention(m.attention, be, dtype, head_dim(m),
                                            backend.uses_cpu_kernels(m, be), backend.gpu_capability())
    return dict(compute_dtype=dtype.name, kernels="cpu" if backend.uses_cpu_kernels(m, be) else "generic",
                attention=impl, attention_reason=reason)


def throughput(tokens_per_step: int, step_s: float, cfg, device: dict) -> dict:
    """tokens/s, FLOPs per token per convention and MFU (PaLM's count, counting.mfu) against the device's
    dense bf16 peak (None, with a note, for a device kind the table does not know)."""
    tok_s = tokens_per_step / step_s
    flops = {c: counting.flops_per_token(cfg.model, cfg.train.seq_len, c) for c in CONVENTIONS}
    out = dict(step_s=step_s, tokens_per_s=tok_s, flops_per_token=flops)
    if device["peak_bf16_flops"] is None:
        out.update(mfu=None, mfu_note=f"no dense bf16 peak known for device kind {device['kind']!r} "
                                      "(simscale.model.counting.DEVICE_PEAK_FLOPS): MFU omitted")
    else:
        out["mfu"] = counting.mfu(tok_s, cfg.model, cfg.train.seq_len, device["kind"], device["count"])
    return out


def compiled_memory(compiled) -> dict | None:
    """XLA's own account of the compiled step (any backend): bytes of arguments, outputs, temporaries."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - a backend without it
        return None
    if stats is None:
        return None
    return {k: int(getattr(stats, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}


def device_memory() -> dict | None:
    """The allocator's peak and limit on device 0 (GPUs and TPUs; None where the backend keeps none)."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return dict(peak_bytes=stats.get("peak_bytes_in_use"), limit_bytes=stats.get("bytes_limit"))


def time_program(prog, state, tokens, timed_steps: int, min_time_s: float, deadline: float):
    """(seconds per step, state, last metrics): two warm-up steps, then blocks of steps until one block of
    at least `timed_steps` steps has filled `min_time_s` (or the deadline is near); the last block counts."""
    for _ in range(2):
        state, metrics = prog.train(state, tokens)
    jax.block_until_ready(metrics)
    n = timed_steps
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            state, metrics = prog.train(state, tokens)
        jax.block_until_ready(metrics)
        elapsed = time.perf_counter() - t0
        grown = math.ceil(n * 1.2 * min_time_s / elapsed) if elapsed > 0 else n
        if elapsed >= min_time_s or time.perf_counter() + 1.2 * min_time_s > deadline or grown <= n:
            return elapsed / n, state, metrics
        n = grown


def train_speed(cfg, timed_steps: int, min_time_s: float, deadline: float, device: dict,
                memory: bool = False) -> dict:
    """One config's compiled train step on all devices, timed: shape, numerics, compile time, speed,
    MFU, XLA's memory figures (and the device allocator's peak with `memory`), first and last loss."""
    mesh = mesh_lib.make_mesh(cfg.mesh)
    prog = step_lib.program(cfg, TOTAL_STEPS, mesh)
    cached = prog.train.compile_time_s is not None  # compiled by an earlier stage of this process
    compiled = prog.train.compile()
    state = prog.init(cfg.seed)
    tokens = jax.device_put(fixed_batch(cfg), prog.batch_sharding)
    state, first = prog.train(state, tokens)
    first_loss = float(first["loss"])
    step_s, state, last = time_program(prog, state, tokens, timed_steps, min_time_s, deadline)
    last_loss = float(last["loss"])
    if not (math.isfinite(first_loss) and math.isfinite(last_loss)):
        raise FloatingPointError(f"non-finite loss training {cfg.model.hidden}x{cfg.model.layers}")
    t = cfg.train
    out = dict(shape_record(cfg), **numerics(cfg), compile_s=prog.train.compile_time_s,
               compiled_before=cached, **throughput(t.batch_size * t.seq_len, step_s, cfg, device),
               compiled_memory=compiled_memory(compiled), first_loss=first_loss, last_loss=last_loss)
    if memory:
        out["device_memory"] = device_memory()
        if out["device_memory"] is None:
            out["device_memory_note"] = f"the {device['backend']} backend keeps no allocator statistics"
    return out
