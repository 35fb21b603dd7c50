"""Branch points of a warmup-stable-decay trunk: the train state at the step where a shorter budget's
decay starts, kept in TRUNK_DIR/branch_points/<step>/ (never pruned), and what a branch takes from them.

A trunk saves each point synchronously, before it trains on and before its own checkpoint of that
step, so a trunk checkpoint past a point means the point is complete. A branch without checkpoints
of its own starts from its point: the trunk's state and its metrics.jsonl rows up to that step.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from simscale import tmpfiles
from simscale.jsonio import read_jsonl
from simscale.train.checkpoint import Checkpoints

FOLDER = "branch_points"


def ready(trunk_dir, step: int) -> bool:
    """Whether the trunk's point at `step` is complete (orbax renames a finished save into place)."""
    return (Path(trunk_dir) / FOLDER / str(step)).is_dir()


def save(trunk_dir: Path, step: int, state, meta: dict) -> None:
    """Save the point `step` and wait until it is on disk."""
    points = Checkpoints(trunk_dir / FOLDER)
    try:
        points.save(step, state, meta)
    finally:
        points.close()  # waits for the save


def check(trunk_dir: Path, points, start: int) -> list[int]:
    """The points a trunk resumed at `start` still owes: those after it, and `start` itself when its
    save was cut short. Raises when an earlier one is missing (removed by hand)."""
    lost = [p for p in points if p < start and not ready(trunk_dir, p)]
    if lost:
        raise FileNotFoundError(f"{trunk_dir / FOLDER} lacks the branch point(s) {lost} though the trunk "
                                f"is at step {start}: remove {trunk_dir / 'checkpoints'} to train it again")
    return sorted(p for p in points if p > start or (p == start and not ready(trunk_dir, p)))


def restore(trunk_dir: Path, step: int, abstract_state):
    """(state, meta) of the trunk's point `step`; raises when it is absent or unreadable."""
    if not ready(trunk_dir, step):
        raise FileNotFoundError(f"the trunk {trunk_dir} has no branch point at step {step} yet")
    points = Checkpoints(trunk_dir / FOLDER, read_only=True)
    try:
        restored = points.restore(abstract_state, step=step)
    finally:
        points.close()
    if restored is None:
        raise ValueError(f"the branch point {trunk_dir / FOLDER / str(step)} is unreadable: remove it and "
                         f"{trunk_dir / 'checkpoints'} to train the trunk again")
    return restored


def copy_metrics(trunk_dir: Path, run_dir: Path, step: int) -> None:
    """The branch's metrics.jsonl: the trunk's rows up to `step` (its own rows follow them)."""
    rows = [r for r in read_jsonl(trunk_dir / "metrics.jsonl") if r.get("step", step + 1) <= step]
    path = run_dir / "metrics.jsonl"
    tmp = tmpfiles.temp_path(path)
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
