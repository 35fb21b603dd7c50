"""The exclusive claim of one run directory, shared by simscale.sweep and simscale.train.

An exclusive `fcntl.flock` on RUN_DIR/lock, held while the run trains: the kernel
drops it when the holder dies (kill -9 included), so a dead worker's lock is
reclaimed by the next claim, which removes the temporary files it left (simscale.tmpfiles). The
lock file also records pid, host and a heartbeat that `status` reads without taking the lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import pathlib
import socket
import threading
import time

from simscale import tmpfiles

HEARTBEAT_S = 10.0


class RunLock:
    """Exclusive claim of one run directory; `acquire()` is non-blocking."""

    def __init__(self, rdir: pathlib.Path):
        self.path = pathlib.Path(rdir) / "lock"
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False at once when another one does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        tmpfiles.remove_stale(self.path.parent)  # what a killed holder was writing
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
    if info["host"] == socket.gethostname() and not tmpfiles.pid_alive(info["pid"]):
        return None
    return info


def held_message(rdir: pathlib.Path) -> str:
    """'RUN_DIR is in use by pid P on host H': for a refused claim."""
    try:
        info = json.loads((pathlib.Path(rdir) / "lock").read_text() or "null") or {}
    except (FileNotFoundError, json.JSONDecodeError):
        info = {}
    who = f"pid {info['pid']} on host {info['host']}" if "pid" in info else "another process"
    return f"{rdir} is in use by {who} (its lock file {pathlib.Path(rdir) / 'lock'}); wait for it or stop it"
