"""Run-directory outputs: status.json, metrics.jsonl, trackers (TensorBoard, W&B) and progress."""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
import time
from pathlib import Path

from simscale import tmpfiles
from simscale.humanize import duration
from simscale.jsonio import read_json, read_jsonl, write_json

TRACKERS = ("tensorboard", "wandb")  # train.trackers: where metrics go besides metrics.jsonl
WANDB_RUN = "wandb.json"  # in the run directory: the W&B run id a resumed run continues


def write_status(run_dir, status: str, step: int, **extra) -> None:
    write_json(Path(run_dir) / "status.json",
               {"status": status, "step": step, "updated": time.time(), **extra})


def summary(record: dict) -> str:
    """One short line: step, loss, tokens/s, MFU (and eval loss when present)."""
    parts = [f"loss {record['loss']:.4f}", f"tok/s {record['tokens_per_s']:,.0f}"]
    if record.get("mfu") is not None:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    if "eval_loss" in record:
        parts.append(f"eval {record['eval_loss']:.4f}")
    return "  ".join(parts)


def tracker_names(spec: str) -> list[str]:
    """train.trackers ("tensorboard,wandb") as a list of names ("": none)."""
    return [t.strip() for t in spec.split(",") if t.strip()]


def tracker_problems(spec: str) -> list[str]:
    """What is wrong with a train.trackers value: a name not in TRACKERS, or wandb without its package."""
    names = tracker_names(spec)
    unknown = [t for t in names if t not in TRACKERS]
    if unknown:
        return [f"train.trackers={spec!r}: {unknown[0]!r} is not a tracker; give a comma list of "
                f"{', '.join(TRACKERS)} (or '' for metrics.jsonl alone)"]
    if "wandb" in names and importlib.util.find_spec("wandb") is None:
        return ["train.trackers names wandb, which is not installed: pip install 'simscale[wandb]'"]
    return []


class TensorBoard:
    """TensorBoard event files in the run directory (tensorboardX)."""

    def __init__(self, run_dir, name: str, config: dict):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(run_dir))

    def log(self, scalars: dict, step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    """One Weights & Biases run per simscale run, its config the run's resolved config. The W&B run id is
    kept in RUN_DIR/wandb.json, so a resumed run continues the same W&B run (resume="allow"). Project:
    $WANDB_PROJECT, else simscale; W&B's files go under $WANDB_DIR, else the run directory. W&B keeps
    a step once: steps logged before an interruption and trained again after the resume keep their
    first values (the same batches; metrics.jsonl holds the retrained ones)."""

    def __init__(self, run_dir, name: str, config: dict):
        import wandb

        path = Path(run_dir) / WANDB_RUN
        run_id = (read_json(path) or {}).get("id")
        if not run_id:
            run_id = secrets.token_hex(6)
            write_json(path, {"id": run_id})
        self.run = wandb.init(id=run_id, resume="allow", name=name or None, config=config,
                              project=os.environ.get("WANDB_PROJECT") or "simscale",
                              dir=None if os.environ.get("WANDB_DIR") else str(run_dir))

    def log(self, scalars: dict, step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKER_CLASSES = {"tensorboard": TensorBoard, "wandb": WandB}


class MetricsLog:
    """Appends records to metrics.jsonl, the trackers (train.trackers), and a tqdm bar (TTY) or plain
    log lines; the trackers get each record's numbers as train/<key> and eval/<key> scalars.

    On resume from `start_step`, records after it (written before an interruption) are dropped,
    so the file holds each step once. Only `enabled` (process 0) writes anything.
    """

    def __init__(self, run_dir, start_step: int, total_steps: int, enabled: bool = True, name: str = "",
                 trackers: str = "tensorboard", config: dict | None = None):
        self.enabled, self.total, self.name = enabled, total_steps, name
        self.t0, self.start = time.perf_counter(), start_step
        if not enabled:
            return
        self.path = Path(run_dir) / "metrics.jsonl"
        if self.path.exists():  # rewritten whole, by a rename: a kill now loses no row
            kept = [r for r in read_jsonl(self.path)  # a cut or damaged line is dropped
                    if isinstance(r.get("step"), int) and r["step"] <= start_step]
            tmp = tmpfiles.temp_path(self.path)
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        self.trackers = [TRACKER_CLASSES[t](run_dir, name, config or {}) for t in tracker_names(trackers)]
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=name or "train", dynamic_ncols=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        step = record["step"]
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {(f"eval/{key}" if key.startswith("eval") else f"train/{key}"): value
                   for key, value in record.items() if key != "step" and isinstance(value, (int, float))}
        for tracker in self.trackers:
            tracker.log(scalars, step)
        if self.bar is not None:
            self.bar.set_postfix_str(summary(record), refresh=False)
            self.bar.update(step - self.bar.n)
        else:
            done = step - self.start
            eta = (time.perf_counter() - self.t0) / done * (self.total - step) if done else float("inf")
            print(f"{self.name + ' ' if self.name else ''}step {step}/{self.total}  {summary(record)}  "
                  f"eta {duration(eta)}", flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        for tracker in self.trackers:
            tracker.close()
        if self.bar is not None:
            self.bar.close()
