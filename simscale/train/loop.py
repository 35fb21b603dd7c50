"""train(cfg, run_dir): one run, resumable, writing the run directory of docs/contracts.md."""
from __future__ import annotations

import collections
import dataclasses
import functools
import math
import shutil
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np

from simscale import at_hand
from simscale.config import (BACKFILL, REPORTING_ONLY, ConfigError, config_hash, differences, from_dict,
                             to_dict, upgrade)
from simscale.data import loader, tokenizer
from simscale.model import counting
from simscale.train import mesh as mesh_lib
from simscale.train import branch
from simscale.train import step as step_lib
from simscale.train.checkpoint import Checkpoints
from simscale.jsonio import read_json, read_jsonl, write_json
from simscale.train.metrics import MetricsLog, write_status
from simscale.validation import check


class NonFiniteLoss(FloatingPointError):
    """The loss (or gradient norm) became NaN or infinite; the run is marked failed."""

    def __init__(self, step: int, what: str = "loss"):
        super().__init__(f"non-finite {what} at step {step}")
        self.step = step


def run_config_of(cfg):
    """The run part of a (possibly sweep) config: a copy without the `sweep` section."""
    d = to_dict(cfg)
    d.pop("sweep", None)
    return from_dict(d)


def total_steps(cfg, train_tokens: int | None) -> int:
    """train.steps, else train.tokens // tokens per step, else one epoch of the prepared data."""
    tc = cfg.train
    if tc.steps > 0:
        return int(tc.steps)
    per_step = tc.batch_size * tc.seq_len
    tokens = tc.tokens or train_tokens
    if not tokens:
        raise ConfigError("set train.steps or train.tokens: synthetic data has no epoch to count")
    if tokens < per_step:
        raise ConfigError(f"{tokens} tokens are fewer than one step of train.batch_size * train.seq_len = "
                          f"{per_step}")
    return int(tokens // per_step)


def _prepare_data(cfg, run_dir: Path, main: bool):
    """simscale.data.prepare(cfg) for real data (copies its tokenizer and word list); None if synthetic."""
    if cfg.data.source == "synthetic":
        return None
    from simscale.data import prepare

    prepared = prepare(cfg)
    if prepared.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"the tokenizer has {prepared.vocab_size} entries but model.vocab_size="
                          f"{cfg.model.vocab_size}: raise model.vocab_size")
    if main:
        shutil.copyfile(prepared.tokenizer_path, run_dir / "tokenizer.json")
        if prepared.vocabulary_path:
            shutil.copyfile(prepared.vocabulary_path, run_dir / "vocab.txt")
    return prepared


def evaluate(prog, params, cfg, local_batches: list[np.ndarray], token_bytes: np.ndarray | None) -> dict:
    """Mean validation nats/token, its standard error over sequences, and bits per byte, on
    `local_batches` (this host's rows of `loader.batches(data, cfg, "validation")`).

    Bits per byte = the evaluated tokens' summed loss in bits / the UTF-8 bytes of source text
    those tokens stand for (`token_bytes[id]`, 0 for the <s> </s> markup), on these same rows.
    """
    losses = [prog.eval(params, _device_batch(prog, local)) for local in local_batches]
    if not losses:
        raise ValueError("the validation split gave no batches: check train.eval_batches and the data")
    per_seq = np.concatenate(jax.device_get(losses)).astype(np.float64)
    mean = float(per_seq.mean())
    stderr = float(per_seq.std(ddof=1) / math.sqrt(per_seq.size)) if per_seq.size > 1 else None
    bpb = None
    if token_bytes is not None:
        n_bytes = sum(int(token_bytes[local[:, 1:]].sum()) for local in local_batches)
        bpb = float(per_seq.sum() * cfg.train.seq_len / math.log(2) / n_bytes)
    return {"eval_loss": mean, "eval_loss_stderr": stderr, "eval_bpb": bpb}


def _device_batch(prog, local: np.ndarray) -> jax.Array:
    """This host's rows -> one global array sharded over the mesh's batch axes."""
    return jax.make_array_from_process_local_data(prog.batch_sharding, local, prog.global_batch_shape)


def read_ahead(items, depth: int = 2):
    """`items` iterated in a background thread, up to `depth` items ahead of the consumer.

    XLA:CPU runs steps on the calling thread (simscale.cpu_runtime), so reading and sharding
    the next batches there overlaps the step instead of waiting for it.
    """
    end = object()
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        queue = collections.deque(pool.submit(next, items, end) for _ in range(depth))
        while (item := queue.popleft().result()) is not end:
            queue.append(pool.submit(next, items, end))
            yield item


def train(cfg, run_dir, *, stop_at: int | None = None, branch_points=(),
          branch_from: tuple[str, int] | None = None) -> dict:
    """Train (or resume) one run into `run_dir`; returns result.json's dict.

    A run whose result.json says done returns it unchanged. `stop_at` ends early after that
    step with a checkpoint (status stays 'running'; a later call resumes): a preemption point.
    Raises NonFiniteLoss (after writing status 'failed') when the loss stops being finite.
    A wsd trunk saves its state at each of `branch_points` (simscale.train.branch); a branch,
    `branch_from` = (the trunk's run directory, its point), starts from that point when it has no
    checkpoint of its own, and its result says `branch_of` and `branch_step`.
    """
    cfg, run_dir, result = open_run(cfg, run_dir)
    if result is not None:
        return result
    main = jax.process_index() == 0
    run = None
    try:
        run = _Run.start(cfg, run_dir, main, branch_points, branch_from)
        try:
            end = _loop(run, run.steps if stop_at is None else min(stop_at, run.steps))
        finally:
            run.close()
        return _finish(run) if end == run.steps else {"status": "running", "step": end}
    except Exception as e:
        fail(run_dir, run.step if run else 0, e)
        raise


def open_run(cfg, run_dir):
    """(run config, run directory, result) before training: the config checked and resolved, the
    directory made and its config.json and status written; `result` is result.json's dict when the run
    is done already (nothing written then), else None."""
    check(cfg, jax.device_count())  # unknown keys and bad values, before anything is written
    cfg = run_config_of(cfg)
    at_hand.resolve(cfg)  # `auto` values: config.json records what the run used
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    main = jax.process_index() == 0
    _check_saved_config(run_dir / "config.json", to_dict(cfg))
    result = read_json(run_dir / "result.json")
    if result is not None and result.get("status") == "done":
        return cfg, run_dir, result
    if main:
        write_json(run_dir / "config.json", to_dict(cfg))
        write_status(run_dir, "running", 0)
    return cfg, run_dir, None


def fail(run_dir: Path, step: int, error: Exception) -> None:
    """status.json 'failed' at `step`, with the error and its traceback (process 0 writes)."""
    if jax.process_index() == 0:
        write_status(run_dir, "failed", step, error=str(error), traceback=traceback.format_exc())


def _loop(run: "_Run", end: int) -> int:
    """Train steps run.step + 1 ... `end`, logging, evaluating and checkpointing on their cadences;
    returns the last step trained: `end`, or the step after which the training data ended."""
    tc = run.cfg.train
    every = lambda n, s: n > 0 and s % n == 0  # noqa: E731
    data = read_ahead(map(functools.partial(_device_batch, run.prog),
                          loader.batches(run.data, run.cfg, "train", run.step)))
    try:
        # The batch of step s + 1 is read before step s reports: a step after which the data ends is
        # the run's last one (evaluated and checkpointed) even when it was also a log step.
        batch = next(data, None) if run.step < end else None
        if batch is None and run.step < end:
            if run.step == 0:
                raise ValueError("the training data gave no batch for step 1")
            end = run.data_ended(run.step)  # resumed at the step where the data ended
        while run.step < end:
            run.train_step(batch)
            s = run.step
            batch = next(data, None) if s < end else None
            if batch is None and s < end:
                end = run.data_ended(s)
            evaluate_now = s == run.steps or every(tc.eval_every, s)
            checkpoint_now = s == end or every(tc.checkpoint_every, s) or s in run.branch_points
            log_now = evaluate_now or checkpoint_now or every(max(tc.log_every, 1), s)
            if log_now:
                record = run.metrics()
                if evaluate_now:
                    record.update(run.evaluate())
                run.write(record)
            if checkpoint_now:
                run.checkpoint()
            if log_now:
                run.window_start = time.perf_counter()  # the next record's tokens/s leaves out this work
        run.ckpt.wait()
    finally:
        data.close()  # joins the read-ahead thread
    return end


def _finish(run: "_Run") -> dict:
    """result.json (and status done) of a run trained to its last step."""
    cfg, tc, end = run.cfg, run.cfg.train, run.step
    last = run.last
    if last is None or last["step"] != end or "eval_loss" not in last:  # resumed at the final step
        run.evaluate()
    tokens = end * tc.batch_size * tc.seq_len
    result = {
        "status": "done", "steps": end, "tokens": tokens,
        "params_total": counting.params_total(cfg.model),
        "params_nonembedding": counting.params_nonembedding(cfg.model),
        "flops": {k: v * tokens for k, v in counting.all_flops_per_token(cfg.model, tc.seq_len).items()},
        "flops_convention": tc.flops_convention,
        "final_loss": last["loss"] if last else _last_logged_loss(run.run_dir), **run.evals,
        "wall_time_s": run.wall_time(), "variant": cfg.data.variant,
        "hidden": cfg.model.hidden, "layers": cfg.model.layers,
        **({"packed_with": run.packed_with} if run.packed_with else {}),
    }
    if run.branch_from:
        result.update(branch_of=Path(run.branch_from[0]).name, branch_step=run.branch_from[1])
    if run.main:
        write_json(run.run_dir / "result.json", result)
        write_status(run.run_dir, "done", end)
    return result


def _check_saved_config(path: Path, given: dict) -> None:
    """Refuse a run directory whose config.json differs from `given`, after filling the keys added since
    it was written whose defaults compute what it computed then (config.BACKFILL; one warning line)."""
    saved = read_json(path)
    if saved is None:
        return
    saved, filled = upgrade(saved)
    changed = [k for k in differences(saved, given) if k not in REPORTING_ONLY]
    if changed:
        listed = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ConfigError(f"{path.parent} holds a run with a different config.json ({listed}): "
                          "choose another run directory")
    if filled:
        warnings.warn(f"{path} predates {', '.join(filled)}: resuming with the default "
                      f"({', '.join(f'{k}={BACKFILL[k]!r}' for k in filled)}), which computes what the run "
                      "did then")


@dataclasses.dataclass
class _Run:
    """One train() call: what it set up (data, compiled program, checkpoints, metrics log) and how far
    it has come (state, step, the last record and evaluation); its methods are the loop's actions."""

    cfg: Any
    run_dir: Path
    main: bool  # process 0, the one that writes run files
    data: Any  # PreparedData, None for synthetic data
    steps: int  # planned steps (fewer once the data ends early)
    prog: step_lib.Program
    ckpt: Checkpoints
    token_bytes: np.ndarray | None  # source-text bytes per token id, for bits per byte
    validation: list[np.ndarray]  # this host's validation rows, the same at every evaluation
    flops_per_token: float
    log: MetricsLog
    state: dict
    step: int
    wall_before: float  # wall time of earlier attempts
    pending: list = dataclasses.field(default_factory=list)  # device metrics of steps not yet logged
    last: dict | None = None  # the last metrics record written
    evals: dict | None = None  # the last evaluation
    clock_start: float = dataclasses.field(default_factory=time.perf_counter)
    window_start: float = dataclasses.field(default_factory=time.perf_counter)  # of the steps in `pending`
    packed_with: list[str] | None = None  # the other runs of its packed group (simscale.train.packed)
    branch_points: list[int] = dataclasses.field(default_factory=list)  # a trunk's points still to save
    branch_from: tuple[str, int] | None = None  # a branch's (trunk run directory, point)

    @classmethod
    def start(cls, cfg, run_dir: Path, main: bool, branch_points=(),
              branch_from: tuple[str, int] | None = None, program_cfg=None) -> "_Run":
        """Everything a run needs, its state restored from the newest readable checkpoint, else from
        its branch point, else fresh.

        `program_cfg` (a packed group's run, whose own train step is not used): the config whose
        program evaluates it and shapes its state; its train step is then not compiled."""
        tc = cfg.train
        data = _prepare_data(cfg, run_dir, main)
        steps = total_steps(cfg, data.train_tokens if data else None)
        prog = step_lib.program(program_cfg or cfg, steps, mesh_lib.make_mesh(cfg.mesh))
        ckpt = Checkpoints(run_dir / "checkpoints", tc)
        restored = ckpt.restore(prog.abstract_state, discard_unreadable=True)
        if restored is None and branch_from:
            restored = branch.restore(Path(branch_from[0]), branch_from[1], prog.abstract_state)
            if main:
                branch.copy_metrics(Path(branch_from[0]), run_dir, branch_from[1])
        state, meta = restored if restored else (prog.init(cfg.seed), {"step": 0, "wall_time_s": 0.0})
        if program_cfg is None:
            prog.train.compile()  # before the clocks start, so the first tokens/s and ETA are real ones
        start = int(meta["step"])
        owed = branch.check(run_dir, branch_points, start)
        if owed and owed[0] == start:  # killed while saving it: the state restored is the point's
            branch.save(run_dir, start, state, dict(meta, step=start))
            owed = owed[1:]
        return cls(
            cfg=cfg, run_dir=run_dir, main=main, data=data, steps=steps, prog=prog, ckpt=ckpt,
            token_bytes=tokenizer.content_bytes(tokenizer.load(data.tokenizer_path)) if data else None,
            validation=list(loader.batches(data, cfg, "validation")),  # the same rows at every evaluation
            flops_per_token=counting.flops_per_token(cfg.model, tc.seq_len, tc.flops_convention),
            log=MetricsLog(run_dir, start, steps, enabled=main, name=run_dir.name, trackers=tc.trackers,
                           config=to_dict(cfg)),
            state=state, step=start, wall_before=float(meta["wall_time_s"]),
            branch_points=owed, branch_from=branch_from)

    def train_step(self, batch) -> None:
        """One compiled step; its metrics stay on the device until the next log step."""
        self.state, metrics = self.prog.train(self.state, batch)
        self.pending.append(metrics)
        self.step += 1

    def metrics(self) -> dict:
        """The record of the steps since the last one: mean loss, throughput, MFU (raises at the first
        non-finite step). The only host-device sync of the loop."""
        tc = self.cfg.train
        window = _fetch(self.pending, self.step)
        self.pending = []
        tokens_per_step = tc.batch_size * tc.seq_len
        tok_s = len(window) * tokens_per_step / (time.perf_counter() - self.window_start)
        return {"step": self.step, "loss": float(np.mean([m["loss"] for m in window])),
                "lr": float(window[-1]["lr"]), "grad_norm": float(window[-1]["grad_norm"]),
                "tokens": self.step * tokens_per_step, "tokens_per_s": tok_s,
                "flops_per_s": tok_s * self.flops_per_token,
                "mfu": counting.mfu(tok_s, self.cfg.model, tc.seq_len, jax.devices()[0].device_kind,
                                    jax.device_count())}

    def evaluate(self) -> dict:
        self.evals = evaluate(self.prog, self.state["params"], self.cfg, self.validation, self.token_bytes)
        return self.evals

    def write(self, record: dict) -> None:
        self.last = record
        self.log.write(record)

    def checkpoint(self) -> None:
        s = self.step
        meta = {"step": s, "wall_time_s": self.wall_time(), "config_hash": config_hash(self.cfg)}
        if s in self.branch_points:  # first and whole: a later checkpoint implies the point
            branch.save(self.run_dir, s, self.state, meta)
            self.branch_points.remove(s)
        self.ckpt.save(s, self.state, meta)
        if self.main:
            write_status(self.run_dir, "running", s)

    def data_ended(self, s: int) -> int:
        """The training data gave no batch after step `s`: the run ends there."""
        warnings.warn(f"the training data ended after {s} of {self.steps} planned steps")
        self.steps = s
        return s

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.clock_start

    def close(self) -> None:
        self.log.close()
        self.ckpt.close()


def _last_logged_loss(run_dir: Path) -> float | None:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return rows[-1]["loss"] if rows else None


def _fetch(pending: list, last_step: int) -> list[dict]:
    """Host copies of the metrics of the steps ending at `last_step`; raises at the first non-finite one."""
    window = jax.device_get(pending)
    first = last_step - len(window) + 1
    for i, m in enumerate(window):
        for key in ("loss", "grad_norm"):
            if not np.isfinite(m[key]):
                raise NonFiniteLoss(first + i, "loss" if key == "loss" else "gradient norm")
    return window
