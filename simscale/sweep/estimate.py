"""Sizes and wall-time estimates of runs, from measured throughput only.

Throughput (tokens/s) of a shape comes from the workdir's past runs
(tokens / wall time of finished runs, else the median tokens_per_s of
metrics.jsonl without its first record, which holds the compilation), else
from W/calibration.json, else from a short calibration: `train()` on synthetic
tokens of the same model and sequence length, at a reduced batch
(`sweep.calibration_batch` sequences), for a few steps in a temporary
directory; its tokens/s stands for the full batch's. Calibrations stop once
`sweep.calibration_budget_s` seconds are spent; the shapes left are scaled by
model FLOPs per token from the costliest shape calibrated (same FLOP/s).

Without a measurement, `device_time_s` estimates a run's time on a named device class (a Colab
TPU v5e-1 or v2-8, an A100, a T4) from its FLOPs, the class's peak (counting.DEVICE_PEAK_FLOPS) and
an assumed MFU: a planning figure, not a measurement.

The first shape calibrated at a reduced batch is also timed at its runs' full batch (one compile
step and one timed step) when that fits in the budget: the error of its reduced-batch
estimate (`batch_check`) is what the dry-run table reports, and the shape's own estimate is then
the full-batch figure.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import pathlib
import statistics
import sys
import tempfile
import time

from simscale.config import program_key
from simscale.jsonio import read_jsonl
from simscale.model import counting
from simscale.sweep import store
from simscale.sweep.grid import PlannedRun

log = logging.getLogger("simscale.sweep")


def run_tokens(run: PlannedRun, epoch_tokens: int) -> tuple[int, bool]:
    """(tokens, exact): the budget of the run, or, when it trains one epoch, that epoch's size:
    `epoch_tokens` capped by data.max_train_tokens (the data stops there)."""
    t = run.cfg.train
    if t.steps:
        return t.steps * t.batch_size * t.seq_len, True
    if t.tokens:
        return t.tokens, True
    cap = run.cfg.data.max_train_tokens
    return int(min(epoch_tokens, cap) if cap else epoch_tokens), False


def sizes(run: PlannedRun, epoch_tokens: int) -> dict:
    """The dry-run record of a run: ids, shape, parameters, tokens, FLOPs, and what it trains itself
    (trained_tokens, trained_flops: a wsd branch only its decay)."""
    m, t = run.cfg.model, run.cfg.train
    tokens, exact = run_tokens(run, epoch_tokens)
    convention = t.flops_convention
    per_token = counting.flops_per_token(m, t.seq_len, convention)
    trained = tokens - run.branch_step * t.batch_size * t.seq_len  # a wsd branch trains its decay only
    return dict(run_id=run.run_id, width=m.hidden, depth=m.layers, variant=run.cfg.data.variant,
                params_total=counting.params_total(m), params_nonembedding=counting.params_nonembedding(m),
                tokens=tokens, tokens_exact=exact, flops=per_token * tokens, flops_convention=convention,
                branch_of=run.branch_of, branch_step=run.branch_step, branch_points=list(run.branch_points),
                trained_tokens=trained, trained_flops=per_token * trained)


# Device classes of `--dry_run --device`: (a device_kind of counting.DEVICE_PEAK_FLOPS, JAX devices a
# run spans); a v2-8's JAX devices are its 8 TensorCores, the others are single chips or GPUs.
DEVICE_CLASSES = {"tpu-v5e-1": ("TPU v5 lite", 1), "tpu-v2-8": ("TPU v2", 8), "a100": ("NVIDIA A100", 1),
                  "t4": ("Tesla T4", 1)}
# The MFU (PaLM's count over the dense peak, as counting.mfu) assumed for those estimates. Not measured
# on these devices: a middle figure for hidden 32-512 at 512 x 128 tokens a step, well under the 40%
# targeted at 1024x8 (docs/training.md, "GPU check"), since the smallest shapes are bound by memory
# traffic and step launches rather than matmuls; their estimates are the most optimistic.
ASSUMED_MFU = 0.25


def device_class(device_kind: str, n_devices: int) -> str | None:
    """The DEVICE_CLASSES name of `n_devices` devices of `device_kind` (jax's), or None."""
    return next((name for name, (kind, n) in DEVICE_CLASSES.items()
                 if kind.lower() in device_kind.lower() and n == n_devices), None)


def device_time_s(run: PlannedRun, tokens: int, device_class: str) -> float:
    """Seconds `run` takes to train `tokens` tokens on `device_class` at ASSUMED_MFU."""
    kind, n_devices = DEVICE_CLASSES[device_class]
    peak = counting.device_peak_flops(kind) * n_devices
    return tokens * counting.flops_palm(run.cfg.model, run.cfg.train.seq_len) / (peak * ASSUMED_MFU)


def measured_throughput(workdir: pathlib.Path) -> dict[str, float]:
    """tokens/s by shape key: calibrations, overridden by the workdir's past runs (the harmonic mean
    over a shape's runs, so that the first run's compilation is spread over all of them)."""
    from simscale.config import upgrade, from_dict

    workdir = pathlib.Path(workdir)
    found = {key: _speed(value) for key, value in store.read_json(workdir / "calibration.json", {}).items()}
    speeds: dict[str, list[float]] = {}
    for rdir in sorted((workdir / "runs").glob("*")):
        cfg = store.read_json(rdir / "config.json")
        speed = _wall_speed(rdir) or _median_speed(rdir / "metrics.jsonl")
        if cfg and speed:
            speeds.setdefault(program_key(from_dict(upgrade(cfg)[0]), speed_only=True), []).append(speed)
    found.update({key: statistics.harmonic_mean(values) for key, values in speeds.items()})
    return found


def _wall_speed(rdir: pathlib.Path) -> float | None:
    """tokens / wall time of a finished run, from its attempts log when it trained in one go (start-up,
    compilation, evaluation and checkpoints included), else from result.json's wall_time_s."""
    result = store.read_json(rdir / "result.json", {})
    if not result.get("tokens"):
        return None
    events = store.attempts(rdir)
    if [e["event"] for e in events[:2]] == ["start", "done"] and events[1]["time"] > events[0]["time"]:
        return result["tokens"] / (events[1]["time"] - events[0]["time"])
    return result["tokens"] / result["wall_time_s"] if result.get("wall_time_s") else None


def _median_speed(path: pathlib.Path) -> float | None:
    speeds = [r.get("tokens_per_s") for r in read_jsonl(path)]
    speeds = [s for s in speeds[1:] if s]
    return statistics.median(speeds) if speeds else None


def _speed(calibration) -> float:
    """tokens/s of a calibration.json entry (a record, or a bare number as older versions wrote): its
    full-batch figure when it has one."""
    if not isinstance(calibration, dict):
        return float(calibration)
    return calibration.get("full_batch", {}).get("tokens_per_s") or calibration["tokens_per_s"]


def _calibrated_method(calibration) -> str:
    full = isinstance(calibration, dict) and calibration.get("full_batch", {}).get("tokens_per_s")
    return "calibrated (full batch)" if full else "calibrated"


def calibration_batch(run: PlannedRun, batch: int, n_devices: int) -> int:
    """Sequences per calibration step: `batch` (0: the run's) rounded up to a multiple of the
    devices, at most the run's batch."""
    full = run.cfg.train.batch_size
    batch = batch or full
    return min(full, -(-batch // n_devices) * n_devices)


def calibrate(run: PlannedRun, steps: int, batch: int = 0) -> dict:
    """{tokens_per_s, batch_size, timed_steps}: `steps` timed train steps of the run's shape at
    `batch` sequences (0: the run's batch) on synthetic tokens, after one compile step."""
    import jax

    from simscale.train import train

    cfg = copy.deepcopy(run.cfg)
    cfg.data.source = "synthetic"
    cfg.eval.tasks = ""
    batch = calibration_batch(run, batch, jax.device_count())
    cfg.train.update(steps=steps + 1, tokens=0, warmup_steps=1, log_every=1, eval_every=10**9,
                     checkpoint_every=10**9, eval_batches=1, batch_size=batch, grad_accum=1)
    with tempfile.TemporaryDirectory(prefix="simscale-calibrate-") as tmp, \
            contextlib.redirect_stdout(sys.stderr):  # keep stdout for the table or JSON
        train(cfg, pathlib.Path(tmp))
        speed = _median_speed(pathlib.Path(tmp) / "metrics.jsonl")
    if not speed:
        raise RuntimeError(f"calibration of {run.run_id} logged no throughput")
    return dict(tokens_per_s=speed, batch_size=batch, timed_steps=steps)


def _flops_per_token(run: PlannedRun) -> float:
    return counting.flops_per_token(run.cfg.model, run.cfg.train.seq_len, run.cfg.train.flops_convention)


def _label(run: PlannedRun) -> str:
    return f"w{run.cfg.model.hidden}d{run.cfg.model.layers}"


def throughputs(runs: list[PlannedRun], workdir: pathlib.Path, calibrate_steps: int, batch: int = 0,
                budget_s: float = math.inf) -> dict[str, tuple[float, str]]:
    """(tokens/s, how it was estimated) for every shape of `runs`: measured, calibrated now (0 steps:
    measured only) cheapest shape first until `budget_s` is spent, the rest scaled by FLOPs."""
    workdir = pathlib.Path(workdir)
    calibrated = store.read_json(workdir / "calibration.json", {})
    past = measured_throughput(workdir)
    known = {key: (speed, _calibrated_method(calibrated[key]) if key in calibrated else "past runs")
             for key, speed in past.items()}
    missing = {program_key(r.cfg, speed_only=True): r for r in sorted(runs, key=_flops_per_token)
               if program_key(r.cfg, speed_only=True) not in known}
    if not (calibrate_steps and missing):
        return known
    start, reference = time.monotonic(), None
    checked = any(isinstance(v, dict) and "full_batch" in v for v in calibrated.values())
    for i, (key, run) in enumerate(missing.items()):
        if reference is not None and time.monotonic() - start >= budget_s:
            ref_run, ref_speed = reference
            known[key] = (ref_speed * _flops_per_token(ref_run) / _flops_per_token(run),
                          f"FLOPs, as {_label(ref_run)}")
            continue
        log.info("calibrating shape %d/%d (w%d d%d): %d timed steps", i + 1, len(missing),
                 run.cfg.model.hidden, run.cfg.model.layers, calibrate_steps)
        t0 = time.monotonic()
        calibrated[key] = record = calibrate(run, calibrate_steps, batch)
        record["shape"] = _label(run)
        if not checked and record["batch_size"] < run.cfg.train.batch_size:
            record["full_batch"] = _full_batch(run, record, time.monotonic() - t0, budget_s)
            checked = True
        store.write_json(workdir / "calibration.json", calibrated)
        known[key] = (_speed(record), _calibrated_method(record))
        reference = (run, known[key][0])
    return known


def _full_batch(run: PlannedRun, reduced: dict, reduced_s: float, budget_s: float) -> dict:
    """The shape timed at its runs' batch (one timed step after the compile step), or why not: when
    that would take longer than the whole calibration budget (estimated as the reduced calibration's
    time plus two full steps at its speed). It may use what is left of the budget: the shapes not
    calibrated then are scaled by FLOPs."""
    t = run.cfg.train
    cost = reduced_s + 2 * t.batch_size * t.seq_len / reduced["tokens_per_s"]
    if cost > budget_s:
        return dict(skipped=f"a full batch ({t.batch_size}) would take ~{cost:.0f} s, more than "
                            f"sweep.calibration_budget_s={budget_s:g}")
    log.info("checking %s at its full batch of %d sequences", _label(run), t.batch_size)
    return calibrate(run, 1, 0)


def batch_check(workdir: pathlib.Path) -> dict | None:
    """How good the reduced-batch estimate was on the shape also timed at its full batch:
    {key (config.program_key, speed_only), shape, batch_size, tokens_per_s,
    full_batch: {batch_size, tokens_per_s} | {skipped},
    time_error: the reduced-batch time estimate / the full-batch one - 1}; None when no shape was."""
    for key, record in store.read_json(pathlib.Path(workdir) / "calibration.json", {}).items():
        if isinstance(record, dict) and "full_batch" in record:
            full = record["full_batch"].get("tokens_per_s")
            return dict(key=key, shape=record.get("shape", "?"), batch_size=record["batch_size"],
                        tokens_per_s=record["tokens_per_s"], full_batch=record["full_batch"],
                        time_error=full / record["tokens_per_s"] - 1 if full else None)
    return None
