"""Warmup-stable-decay branching: runs that differ only in their token budget share one trunk.

With `schedule=wsd` the LR before a run's decay start does not depend on its budget (given
warmup_steps <= its steps), and the batch of step s is a function of (seed, s): the run of the
longest budget (the trunk) passes through the exact state every shorter budget has where its decay
starts. The trunk saves its state there (simscale.train.branch); each shorter budget (a branch) starts
from that point and trains only its decay. `sweep.branch=False` trains every budget from scratch.
"""
from __future__ import annotations

import dataclasses
import json

from simscale.config import flat, to_dict
from simscale.train import optim

BUDGET_KEYS = ("train.steps", "train.tokens")


def plan(runs: list) -> tuple[list, list[str]]:
    """(`runs` with their branch roles set, problems): in each group of wsd runs with a fixed step count
    that differ only in BUDGET_KEYS, the most steps make the trunk and every other run branches off it
    at its decay start."""
    groups: dict[str, list] = {}
    for r in runs:
        if r.cfg.train.schedule == "wsd" and r.cfg.train.steps > 0:
            groups.setdefault(_stem(r.cfg), []).append(r)
    roles, errors = {}, []
    for members in groups.values():
        if len(members) < 2:
            continue
        trunk = max(members, key=lambda r: r.cfg.train.steps)
        points = []
        for r in members:
            t = r.cfg.train
            if r is trunk:
                continue
            if t.warmup_steps > t.steps:
                errors.append(f"{r.run_id}: train.warmup_steps={t.warmup_steps} exceeds its {t.steps} steps, "
                              "so its warmup differs from its trunk's: lower train.warmup_steps or set "
                              "sweep.branch=False")
                continue
            start = optim.decay_start(t, t.steps)
            if start > 0:
                roles[r.run_id] = dict(branch_of=trunk.run_id, branch_step=start)
                points.append(start)
        if points:
            roles[trunk.run_id] = dict(branch_points=tuple(sorted(set(points))))
    return [dataclasses.replace(r, **roles.get(r.run_id, {})) for r in runs], errors


def trained_steps(run) -> int:
    """Steps the run trains itself: a branch's decay only."""
    return run.cfg.train.steps - run.branch_step


def _stem(cfg) -> str:
    return json.dumps({k: v for k, v in flat(to_dict(cfg)).items() if k not in BUDGET_KEYS}, sort_keys=True)
