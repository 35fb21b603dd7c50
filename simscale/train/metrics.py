"""Run-directory outputs: status.json, metrics.jsonl, TensorBoard and progress."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from simscale import tmpfiles
from simscale.humanize import duration
from simscale.jsonio import read_jsonl, write_json


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


class MetricsLog:
    """Appends records to metrics.jsonl, TensorBoard, and a tqdm bar (TTY) or plain log lines.

    On resume from `start_step`, records after it (written before an interruption) are dropped,
    so the file holds each step once. Only `enabled` (process 0) writes anything.
    """

    def __init__(self, run_dir, start_step: int, total_steps: int, enabled: bool = True, name: str = ""):
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
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(run_dir))
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
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.tb.add_scalar(f"train/{key}" if not key.startswith("eval") else f"eval/{key}", value,
                                   step)
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
        self.tb.close()
        if self.bar is not None:
            self.bar.close()
