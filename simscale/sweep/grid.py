"""Grid expansion: a sweep config -> validated runs with stable ids.

The `sweep` section (sweeps/grid.py, docs/sweeps.md) lists axes. Axes are
multiplied in AXES order, except those joined in a `zip` group ("width,heads,lr"),
which advance together. `auto` values of the base run config are resolved
(simscale.at_hand), then each point and its token budget are applied to it. The run id is a
readable prefix (width, depth, variant, seed, tokens) plus a hash of the resolved run config's
non-default settings, both from the config alone, so reordering or extending
a grid keeps the ids of the runs it already had. With `sweep.branch` (default), wsd runs that differ
only in their budget are planned as a trunk and branches (simscale.sweep.branches).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import re

from ml_collections import ConfigDict

from simscale import at_hand
from simscale.config import REPORTING_ONLY, SWEEP_AXES, ConfigError, config_hash, flat, run_config, to_dict
from simscale.model import counting
from simscale.sweep import branches
from simscale.humanize import human
from simscale.validation import check_keys, problems

AXES = SWEEP_AXES  # known axes, in expansion order
_ABSENT = object()


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    run_id: str
    cfg: ConfigDict  # the resolved run config (no `sweep` section)
    point: dict  # the axis values that made it
    branch_of: str = ""  # a wsd branch: its trunk's run id ...
    branch_step: int = 0  # ... and the trunk's step it starts from (its decay start)
    branch_points: tuple[int, ...] = ()  # a wsd trunk: the steps its branches start from


def expand(cfg: ConfigDict, n_devices: int = 1) -> list[PlannedRun]:
    """Every run of the sweep, validated; raises ConfigError listing every bad run."""
    check_keys(cfg)  # unknown keys and axes, before anything else
    sweep = cfg.sweep
    base = ConfigDict(copy.deepcopy({k: v for k, v in to_dict(cfg).items() if k != "sweep"}))
    at_hand.resolve(base)  # `auto` values, before run ids are made (the entry points say what they chose)
    points = _points(sweep)
    runs, errors = [], []
    for point in points:
        run_cfg = _resolve(base, point)
        run_id = _run_id(run_cfg)
        errors += [f"{run_id}: {e}" for e in problems(run_cfg, n_devices)]
        runs.append(PlannedRun(run_id, run_cfg, point))
    if sweep.get("branch", True):
        runs, branch_errors = branches.plan(runs)
        errors += branch_errors
    ids = [r.run_id for r in runs]
    errors += [f"{i}: appears {ids.count(i)} times (two grid points resolve to one config)"
               for i in sorted(set(ids)) if ids.count(i) > 1]
    if errors:
        raise ConfigError(f"{len(errors)} invalid run(s) in the sweep; nothing was trained:\n  "
                          + "\n  ".join(errors))
    return runs


def select(runs: list[PlannedRun], only: str = "", skip: str = "") -> list[PlannedRun]:
    """Runs whose id matches `only` (regex search) and not `skip`."""
    keep, drop = _pattern(only, "only"), _pattern(skip, "skip")
    return [r for r in runs if (not keep or keep.search(r.run_id)) and not (drop and drop.search(r.run_id))]


def _pattern(expr: str, flag: str):
    try:
        return re.compile(expr) if expr else None
    except re.error as e:
        raise ConfigError(f"--{flag}={expr!r} is not a regular expression ({e})") from None


def _points(sweep: ConfigDict) -> list[dict]:
    axes = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in sweep.axes.items()}
    for name, values in axes.items():
        if not values:
            raise ConfigError(f"sweep.axes.{name} is empty")
    groups, zipped = [], set()
    for spec in sweep.zip:
        names = [n.strip() for n in str(spec).split(",") if n.strip()]
        missing = [n for n in names if n not in axes]
        if missing or zipped & set(names):
            raise ConfigError(f"sweep.zip group {spec!r}: axes {missing or sorted(zipped & set(names))} "
                              "are not in sweep.axes or are zipped twice")
        lengths = {n: len(axes[n]) for n in names}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"sweep.zip group {spec!r} needs equal-length axes, got {lengths}")
        groups.append([dict(zip(names, vals)) for vals in zip(*(axes[n] for n in names))])
        zipped |= set(names)
    groups += [[{n: v} for v in axes[n]] for n in axes if n not in zipped]
    groups.sort(key=lambda g: min(AXES.index(n) for n in g[0]))
    return [dict(kv for part in combo for kv in part.items()) for combo in itertools.product(*groups)]


def _resolve(base: ConfigDict, point: dict) -> ConfigDict:
    """Apply one grid point and its token budget to a copy of the base config."""
    cfg = copy.deepcopy(base)
    m, t = cfg.model, cfg.train
    for name, (section, key) in {"width": (m, "hidden"), "depth": (m, "layers"),
                                 "variant": (cfg.data, "variant"), "lr": (t, "lr"), "heads": (m, "heads"),
                                 "batch_size": (t, "batch_size")}.items():
        if name in point:
            setattr(section, key, type(getattr(section, key))(point[name]))
    if "seed" in point:
        cfg.seed = int(point["seed"])
    tokens = _budget_tokens(cfg, point)
    if tokens is not None:
        per_step = t.batch_size * t.seq_len
        t.steps = max(1, round(tokens / per_step))
        t.tokens = t.steps * per_step
    return cfg


def _budget_tokens(cfg: ConfigDict, point: dict) -> float | None:
    """Tokens for this run from the budget axes, or None to keep train.steps/tokens."""
    given = [k for k in ("tokens", "tokens_per_param", "flops") if k in point]
    if len(given) > 1:
        raise ConfigError(f"sweep axes {given} all set the token budget; keep one")
    if not given:
        return None
    if given[0] == "tokens":
        return float(point["tokens"])
    try:
        n = counting.params_total(cfg.model)
    except ValueError:
        return None  # an invalid shape: problems() reports it
    if given[0] == "tokens_per_param":  # Chinchilla's ratio counts all parameters
        return float(point["tokens_per_param"]) * n
    return float(point["flops"]) / counting.flops_6n(cfg.model, cfg.train.seq_len)  # D = C / 6N


def _run_id(cfg: ConfigDict) -> str:
    """`w64-d2-simplified[-s<seed>][-t<tokens>]-<hash>`: all from the config (not the grid), so stable.

    The hash covers the settings that differ from simscale.config.run_config()'s defaults, outside
    `eval` (evaluation does not change training) and REPORTING_ONLY (trackers): a key added to the
    defaults renames no run.
    """
    parts = [f"w{cfg.model.hidden}", f"d{cfg.model.layers}", cfg.data.variant]
    if cfg.seed:
        parts.append(f"s{cfg.seed}")
    if cfg.train.tokens:
        parts.append(f"t{human(cfg.train.tokens)}")
    defaults = flat(to_dict(run_config()))
    changed = {k: v for k, v in flat(to_dict(cfg)).items()
               if not k.startswith("eval.") and k not in REPORTING_ONLY and defaults.get(k, _ABSENT) != v}
    return "-".join(parts + [config_hash(changed, 8)])
