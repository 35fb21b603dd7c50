"""Temporary files and folders that name their writer, and the removal of those a killed writer left.

    tmp = tmpfiles.temp_path(final)        # FOLDER/.NAME.tmp<pid>@<host>: write it, then rename it to final
    fd, tmp = tmpfiles.mkstemp(final)      # FOLDER/.NAME.tmp<pid>-<unique>@<host>
    tmpfiles.remove_stale(folder)          # temporaries in folder whose writer is no longer running

A temporary is stale when its writer's pid is not alive on this host. One written on another host
(a shared filesystem) is never removed here: its writer may still be running there. A name without
a host (written before hosts were recorded) counts as this host's.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import sys
import tempfile


# .NAME.tmpPID[-UNIQUE][@HOST]
_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)(?:-[^@/]*)?(?:@(?P<host>[^/]+))?$")


def temp_path(final) -> pathlib.Path:
    """Where this process writes `final` before renaming it into place."""
    final = pathlib.Path(final)
    return final.with_name(f".{final.name}.tmp{os.getpid()}@{socket.gethostname()}")


def mkstemp(final) -> tuple[int, str]:
    """tempfile.mkstemp for `final`, named as temp_path but unique within the process (fd, path)."""
    final = pathlib.Path(final)
    return tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.tmp{os.getpid()}-",
                            suffix=f"@{socket.gethostname()}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale(path) -> bool:
    """Whether `path` is a temporary (by its name) whose writer on this host has gone."""
    m = _TEMP.match(pathlib.Path(path).name)
    if not m or (m["host"] or socket.gethostname()) != socket.gethostname():
        return False
    return not pid_alive(int(m["pid"]))


def remove_stale(folder, name: str | None = None, log=None) -> list[pathlib.Path]:
    """Remove the stale temporaries directly in `folder` (only those of `name` when given), saying so."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        m = _TEMP.match(path.name)
        if m and (name is None or m["name"] == name) and stale(path):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        (log or _stderr)(f"removed {len(removed)} temporary file(s) or folder(s) left by a process no longer "
                         f"running: {', '.join(map(str, removed))}")
    return removed


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
