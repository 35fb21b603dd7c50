"""The five stages of the GPU check. Each takes (plan, ctx) and returns its record; a record with an
`error` marks the stage failed (the runner also fails a stage that raises or overruns its budget).

- train: the plan's main config (the paper's 1024x8, 512 x 128 tokens per step, bf16 matmuls on a
  GPU): tokens/s, MFU, memory.
- shapes: every shape of the paper's grid at its batch, cheapest first while the budget lasts.
- attention: the main config with model.attention=xla and =cudnn, each timed (or why cuDNN cannot).
- agreement: the generic path's losses in bfloat16 against the CPU kernels' in float32 on the host's
  CPU backend, on one fixed batch over a few AdamW steps (and the generic path in float32 too).
- sweep: `python -m simscale.sweep` on the smoke preset, two runs, on this machine's accelerator.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

import jax
from ml_collections import ConfigDict

from simscale.config import ConfigError
from simscale.gpu_check import measure
from simscale.gpu_check.plan import ROOT, Plan
from simscale.train import mesh as mesh_lib
from simscale.train import step as step_lib

# Loss agreement bounds, relative, per step. bfloat16 keeps 8 significant bits: rounding a matmul input
# moves it by at most 2^-9 of itself, and sums of many such products average the errors out, so a
# loss within 2^-8 (0.39%, half bfloat16's machine epsilon 2^-7) of float32's is bfloat16 working as
# intended; float32 paths differ only in summation order (CPU tests: <= 6e-8 relative).
BF16_RTOL = 2.0**-8
F32_RTOL = 1e-4


@dataclasses.dataclass
class Context:
    device: dict  # measure.device_info()
    out: pathlib.Path  # the output folder
    deadline: float = math.inf  # time.perf_counter() by which the current stage must end


def _with(cfg: ConfigDict, **model) -> ConfigDict:
    cfg = ConfigDict(cfg.to_dict())
    cfg.model.update(model)
    return cfg


def train(plan: Plan, ctx: Context) -> dict:
    return measure.train_speed(plan.main, plan.timed_steps, plan.min_time_s, ctx.deadline, ctx.device,
                               memory=True)


def shapes(plan: Plan, ctx: Context) -> dict:
    measured, skipped, errors, last_cost = [], [], [], 0.0
    for cfg in plan.grid:
        name = measure.shape_record(cfg)["name"]
        if time.perf_counter() + last_cost > ctx.deadline:  # the next shape would not fit
            skipped.append(name)
            continue
        t0 = time.perf_counter()
        try:
            measured.append(measure.train_speed(cfg, plan.timed_steps, plan.min_time_s, ctx.deadline,
                                                ctx.device))
        except Exception as e:  # noqa: BLE001 - one shape failing (e.g. out of memory) leaves the others
            errors.append(f"{name}: {type(e).__name__}: {e}")
        last_cost = time.perf_counter() - t0
    out = dict(shapes=measured, skipped=skipped)
    problems = errors + ([f"the stage's budget was spent before {', '.join(skipped)}"] if skipped else [])
    if problems:
        out["error"] = "; ".join(problems)
    return out


def attention(plan: Plan, ctx: Context) -> dict:
    out, errors = {}, []
    for impl in ("xla", "cudnn"):
        try:
            rec = measure.train_speed(_with(plan.main, attention=impl), plan.timed_steps, plan.min_time_s,
                                      ctx.deadline, ctx.device)
        except ConfigError as e:  # simscale.model.backend says this backend cannot run it, and why
            out[impl] = dict(supported=False, reason=str(e))
            continue
        except Exception as e:  # noqa: BLE001 - the kernel was expected to run and did not
            out[impl] = dict(supported=True, error=f"{type(e).__name__}: {e}")
            errors.append(f"{impl}: {out[impl]['error']}")
            continue
        out[impl] = dict(supported=True, attention=rec["attention"], step_s=rec["step_s"],
                         tokens_per_s=rec["tokens_per_s"], mfu=rec["mfu"], compile_s=rec["compile_s"])
    out["shape"] = measure.shape_record(plan.main)
    if all("step_s" in out[i] for i in ("xla", "cudnn")):
        out["cudnn_speedup"] = out["xla"]["step_s"] / out["cudnn"]["step_s"]
    if errors:
        out["error"] = "; ".join(errors)
    return out


def _losses(cfg: ConfigDict, devices, precise: bool, start: dict) -> list[float]:
    """Each step's loss over cfg.train.steps AdamW steps on one fixed batch, on `devices`, from the
    train state `start` (host arrays); `precise`: float32 matmuls at full precision (GPUs otherwise may
    multiply float32 in TF32)."""
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices)
    with jax.default_matmul_precision("highest") if precise else contextlib.nullcontext():
        prog = step_lib.build(cfg, cfg.train.steps, mesh)  # built afresh: compiled under this precision
        state = jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), start, prog.abstract_state)
        tokens = jax.device_put(measure.fixed_batch(cfg, seed=1), prog.batch_sharding)
        losses = []
        for _ in range(cfg.train.steps):
            state, metrics = prog.train(state, tokens)
            losses.append(metrics["loss"])
        return [float(x) for x in jax.device_get(losses)]


def _compare(name: str, losses: list[float], reference: list[float], rtol: float) -> dict:
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True))
    return dict(compared=name, max_rel_diff=worst, rtol=rtol, passed=bool(worst <= rtol))


def agreement(plan: Plan, ctx: Context) -> dict:
    cfg, here = plan.agreement, jax.devices()[:1]
    out = dict(shape=measure.shape_record(cfg), steps=cfg.train.steps, device=here[0].device_kind)
    paths = {"generic_bf16": _with(cfg, kernels="generic", compute_dtype="bfloat16"),
             "generic_f32": _with(cfg, kernels="generic", compute_dtype="float32"),
             "cpu_kernels_f32": _with(cfg, kernels="cpu", compute_dtype="float32")}
    out["numerics"] = {name: measure.numerics(c) for name, c in paths.items()}
    # One initial state for every path (init does not depend on the kernels or dtypes), on the host.
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, here)
    start = jax.device_get(step_lib.build(cfg, cfg.train.steps, mesh).init(cfg.seed))
    out["losses"] = {"generic_bf16": _losses(paths["generic_bf16"], here, False, start),
                     "generic_f32": _losses(paths["generic_f32"], here, True, start)}
    try:
        host = jax.devices("cpu")[:1]
    except RuntimeError as e:  # a jax started with JAX_PLATFORMS lacking cpu
        host, out["cpu_reference_note"] = None, f"no CPU backend for the CPU-kernel reference: {e}"
    if host:
        out["cpu_reference_device"] = host[0].device_kind
        out["losses"]["cpu_kernels_f32"] = _losses(paths["cpu_kernels_f32"], host, True, start)
        ref = out["losses"]["cpu_kernels_f32"]
        losses = out["losses"]
        out["comparisons"] = [
            _compare("generic_bf16 vs cpu_kernels_f32", losses["generic_bf16"], ref, BF16_RTOL),
            _compare("generic_f32 vs cpu_kernels_f32", losses["generic_f32"], ref, F32_RTOL)]
    else:
        ref = out["losses"]["generic_f32"]
        out["comparisons"] = [
            _compare("generic_bf16 vs generic_f32", out["losses"]["generic_bf16"], ref, BF16_RTOL)]
    # the steps train: the losses compared are not all one point
    out["reference_loss_drop"] = ref[0] - ref[-1]
    out["passed"] = all(c["passed"] for c in out["comparisons"]) and out["reference_loss_drop"] > 0
    if not all(math.isfinite(x) for losses in out["losses"].values() for x in losses):
        out["error"] = "non-finite losses"
    elif not out["passed"]:
        out["error"] = ("; ".join(f"{c['compared']}: {c['max_rel_diff']:.2e} > {c['rtol']:.2e}"
                                  for c in out["comparisons"] if not c["passed"])
                        or "the reference did not train")
    return out


def sweep(plan: Plan, ctx: Context) -> dict:
    workdir = ctx.out / "sweep"
    cmd = [sys.executable, "-m", "simscale.sweep", *plan.sweep_args, f"--workdir={workdir}"]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    # This process holds the accelerator's memory pool: the sweep allocates what it needs beside it.
    env = {**os.environ, "PYTHONPATH": path, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    out = dict(command=" ".join(cmd))
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=max(1.0, ctx.deadline - time.perf_counter()), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out["error"] = f"the sweep did not finish within the stage's budget ({e.timeout:.0f} s)"
        return out
    out["returncode"] = proc.returncode
    out["runs"] = [_run_record(rdir) for rdir in sorted((workdir / "runs").glob("*"))]
    problems = [f"exit status {proc.returncode}"] if proc.returncode else []
    problems += [f"{r['run_id']}: {r['status']}" for r in out["runs"] if r["status"] != "done"]
    problems += [f"{r['run_id']}: non-finite loss" for r in out["runs"] if not _finite(r.get("final_loss"))]
    if len(out["runs"]) != 2:
        problems.append(f"{len(out['runs'])} run directories, expected 2")
    if problems:
        out["error"] = "; ".join(problems)
        out["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _run_record(rdir: pathlib.Path) -> dict:
    def read(name):
        path = rdir / name
        return json.loads(path.read_text()) if path.exists() else {}

    result, status = read("result.json"), read("status.json")
    rows = [json.loads(line) for line in (rdir / "metrics.jsonl").read_text().splitlines()] \
        if (rdir / "metrics.jsonl").exists() else []
    speeds = [r["tokens_per_s"] for r in rows[1:] if r.get("tokens_per_s")]  # the first holds compilation
    return dict(run_id=rdir.name, status=status.get("status", "missing"), steps=result.get("steps"),
                final_loss=result.get("final_loss"), eval_loss=result.get("eval_loss"),
                tokens_per_s=statistics.median(speeds) if speeds else None)


STAGES = {"train": train, "shapes": shapes, "attention": attention, "agreement": agreement, "sweep": sweep}
