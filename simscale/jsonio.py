"""JSON files that are never seen half-written: every run, sweep and evaluation file goes through here."""
from __future__ import annotations

import json
import os
import pathlib

from simscale import tmpfiles


def write_json(path, obj, allow_nan: bool = True) -> None:
    """Atomic: write a temp file in the same folder, fsync, rename over `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tmpfiles.mkstemp(path)  # named after this process: removed by the next claim if it is killed
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, allow_nan=allow_nan)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path, default=None):
    """The parsed file, or `default` when it is absent (a malformed file raises, naming it)."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete or repair it") from None


def read_jsonl(path) -> list[dict]:
    """Records of a JSON-lines log ([] when absent); a line cut short by a killed writer, or damaged
    (not JSON, not UTF-8, not an object), is skipped."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # blank, cut by a kill mid-write, or damaged bytes (UnicodeDecodeError included)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
