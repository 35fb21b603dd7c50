"""The sweep's files: W/sweep.json, W/runs/<id>/{status,result,config}.json, run locks.

A run is claimed with an exclusive `fcntl.flock` on W/runs/<id>/lock, held while
it trains: the kernel drops it when the holder dies (kill -9 included), so a
dead worker's lock is reclaimed by the next claim. The lock file also records
pid, host and a heartbeat that `status` reads without taking the lock.
Every claim and outcome is appended to W/runs/<id>/attempts.jsonl.
"""
from __future__ import annotations

import fcntl
import json
import os
import pathlib
import socket
import threading
import time

from simscale.jsonio import read_json, read_jsonl, write_json  # noqa: F401  (the store's file API)

HEARTBEAT_S = 10.0


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


class RunLock:
    """Exclusive claim of one run directory; `acquire()` is non-blocking."""

    def __init__(self, rdir: pathlib.Path):
        self.path = pathlib.Path(rdir) / "lock"
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        self._beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        self._thread.join()
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _beat(self) -> None:
        info = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, info, 0)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._beat()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def holder(rdir: pathlib.Path) -> dict | None:
    """Who holds the run's lock, judged from its heartbeat (None when nobody does)."""
    try:
        info = json.loads((pathlib.Path(rdir) / "lock").read_text() or "null")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not info or time.time() - info["heartbeat"] > 3 * HEARTBEAT_S:
        return None
    if info["host"] == socket.gethostname() and not _alive(info["pid"]):
        return None
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
