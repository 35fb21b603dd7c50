"""The sweep's files: W/sweep.json, W/runs/<id>/{status,result,config}.json, run locks.

A run is claimed with simscale.runlock.RunLock on W/runs/<id>/lock while it trains
(simscale.train takes the same lock). Every claim and outcome is appended to
W/runs/<id>/attempts.jsonl.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import time

from simscale.jsonio import read_json, read_jsonl, write_json  # noqa: F401  (the store's file API)
from simscale.runlock import RunLock, holder  # noqa: F401  (the store's lock API)


def run_dir(workdir: pathlib.Path, run_id: str) -> pathlib.Path:
    return pathlib.Path(workdir) / "runs" / run_id


def append_attempt(rdir: pathlib.Path, event: str, **extra) -> None:
    line = json.dumps(dict(event=event, pid=os.getpid(), host=socket.gethostname(), time=time.time(), **extra))
    with open(rdir / "attempts.jsonl", "a") as f:
        f.write(line + "\n")


def attempts(rdir: pathlib.Path) -> list[dict]:
    return read_jsonl(rdir / "attempts.jsonl")


def last_metrics(rdir: pathlib.Path) -> dict:
    """The last complete record of metrics.jsonl (empty dict when none)."""
    rows = read_jsonl(rdir / "metrics.jsonl")
    return rows[-1] if rows else {}
