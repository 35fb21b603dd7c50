"""The sweep's files: W/sweep.json, W/runs/<id>/{status,result,config}.json, run locks.

A run is claimed with simscale.runlock.RunLock on W/runs/<id>/lock while it trains
(simscale.train takes the same lock). Every claim and outcome is appended to
W/runs/<id>/attempts.jsonl.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import time

from simscale.jsonio import read_json, read_jsonl, write_json
from simscale.runlock import RunLock, holder  # noqa: F401  (the store's lock API)

log = logging.getLogger("simscale.sweep")


def run_dir(workdir: pathlib.Path, run_id: str) -> pathlib.Path:
    return pathlib.Path(workdir) / "runs" / run_id


def append_attempt(rdir: pathlib.Path, event: str, **extra) -> None:
    line = json.dumps(dict(event=event, pid=os.getpid(), host=socket.gethostname(), time=time.time(),
                           **extra))
    with open(rdir / "attempts.jsonl", "a") as f:
        f.write(line + "\n")


def attempts(rdir: pathlib.Path) -> list[dict]:
    return read_jsonl(rdir / "attempts.jsonl")


def _checkpoint_steps(rdir: pathlib.Path) -> list[int]:
    folder = pathlib.Path(rdir) / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def run_status(rdir: pathlib.Path, repair: bool = False) -> dict:
    """status.json checked against the run's own files.

    A run whose result.json says done and whose final checkpoint exists is done, whatever
    status.json says (absent, unreadable, stale). An unreadable status.json otherwise reads as
    interrupted at the newest checkpoint. With `repair` (the lock holder), a status.json that
    disagrees is rewritten from the run's files, with one warning.
    """
    rdir = pathlib.Path(rdir)
    try:
        status, unreadable = read_json(rdir / "status.json", {}), False
    except ValueError:
        status, unreadable = {}, True
    try:
        result = read_json(rdir / "result.json") or {}
    except ValueError:
        result = {}
    steps = _checkpoint_steps(rdir)
    if result.get("status") == "done" and result.get("steps") in steps:
        rebuilt = (None if status.get("status") == "done"
                   else dict(status, status="done", step=result["steps"]))
    elif unreadable:
        rebuilt = dict(status="running", step=steps[-1] if steps else 0)
    else:
        return status
    if rebuilt is None:
        return status
    if repair:
        log.warning("%s %s: rebuilt from result.json and checkpoints/ as %s at step %d", rdir / "status.json",
                    "was unreadable" if unreadable else f"said {status.get('status', 'nothing')!r}",
                    rebuilt["status"], rebuilt["step"])
        write_json(rdir / "status.json", dict(rebuilt, updated=time.time()))
    return rebuilt


def last_metrics(rdir: pathlib.Path) -> dict:
    """The last complete record of metrics.jsonl (empty dict when none)."""
    rows = read_jsonl(rdir / "metrics.jsonl")
    return rows[-1] if rows else {}
