"""The one config validator every entry point runs before it writes anything.

    check(cfg, n_devices)   # raises ConfigError: unknown keys first, then bad values

`check_keys` refuses a key that run_config() / sweep_config() do not define (a
mistyped `--config.train.lr_flor=...` would otherwise train with the default),
naming the nearest valid key. `problems` lists every bad value of one resolved
run config; the sweep reports them per run, simscale.train refuses the first.
"""
from __future__ import annotations

import difflib
import os
import pathlib

from ml_collections import ConfigDict

from simscale.config import SWEEP_AXES, ConfigError, flat, run_config, sweep_config, to_dict

VARIANTS = ("simplified", "unrestricted")


def known_keys() -> list[str]:
    """Every key a run or sweep config may set, dotted (sweep.axes.<axis> for each known axis)."""
    sweep = flat(to_dict(sweep_config()), "sweep.")
    keys = [k for k in sweep if not k.startswith("sweep.axes.")] + [f"sweep.axes.{a}" for a in SWEEP_AXES]
    return sorted(flat(to_dict(run_config())).keys() | set(keys))


def unknown_key_message(key: str, known: list[str]) -> str:
    """'unknown config key K (did you mean N?)': N is the closest key of K's section (else of all)."""
    section = key.rsplit(".", 1)[0] + "." if "." in key else ""
    pool = [k for k in known if k.startswith(section) and k.count(".") == key.count(".")] or known
    nearest = difflib.get_close_matches(key, pool, n=1, cutoff=0.0)
    return f"unknown config key {key}" + (f" (did you mean {nearest[0]}?)" if nearest else "")


def check_keys(cfg: ConfigDict | dict) -> None:
    """Raise ConfigError naming the first key of `cfg` that no config defines."""
    known = known_keys()
    d = to_dict(cfg) if isinstance(cfg, ConfigDict) else cfg
    keys = set(flat(d))
    # A section given as a leaf (e.g. --config.train=1) or a key nested under a leaf is unknown too.
    prefixes = {k.rsplit(".", 1)[0] for k in known if "." in k}
    for key in sorted(keys):
        if key not in known or key in prefixes:
            raise ConfigError(unknown_key_message(key, known))


def problems(cfg: ConfigDict, n_devices: int) -> list[str]:
    """Every problem with one resolved run config (empty when it can train)."""
    m, t = cfg.model, cfg.train
    errors = []
    if cfg.data.variant not in VARIANTS:
        errors.append(f"data.variant={cfg.data.variant!r} is not one of {VARIANTS}")
    for key, value in (("model.hidden", m.hidden), ("model.layers", m.layers), ("model.heads", m.heads),
                       ("model.vocab_size", m.vocab_size), ("train.batch_size", t.batch_size),
                       ("train.seq_len", t.seq_len)):
        if value <= 0:
            errors.append(f"{key}={value} must be positive")
    if m.heads > 0 and m.hidden % m.heads:
        errors.append(f"model.hidden={m.hidden} is not divisible by model.heads={m.heads}")
    elif m.heads > 0 and m.hidden > 0 and (m.hidden // m.heads) % 2:
        errors.append(f"model.hidden={m.hidden} / model.heads={m.heads} gives an odd head dimension "
                      f"{m.hidden // m.heads}: rotary embeddings need an even one")
    if m.kv_heads and m.heads % m.kv_heads:
        errors.append(f"model.heads={m.heads} is not divisible by model.kv_heads={m.kv_heads}")
    if t.seq_len > m.max_len:
        errors.append(f"train.seq_len={t.seq_len} exceeds model.max_len={m.max_len}")
    if t.steps < 0 or t.tokens < 0:
        errors.append(f"train.steps={t.steps} and train.tokens={t.tokens} must not be negative")
    from simscale.train.mesh import mesh_shape  # the trainer's own rules

    try:
        data, fsdp, _ = mesh_shape(cfg.mesh, n_devices)
    except ConfigError as e:
        errors.append(str(e))
    else:
        if t.grad_accum < 1 or t.batch_size % t.grad_accum:
            errors.append(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
        elif (t.batch_size // t.grad_accum) % (data * fsdp):
            errors.append(f"train.batch_size={t.batch_size} (per micro-batch {t.batch_size // t.grad_accum}) is not "
                          f"divisible by the {data * fsdp} data-parallel device(s) of the mesh")
    return errors


def check_folder(path, flag: str, created: bool = True) -> None:
    """Raise ConfigError when a folder argument (--workdir, --data_dir, --run, --out) names an existing
    non-folder; `created`: the command creates the folder when it does not exist (the message says so)."""
    if path and pathlib.Path(path).exists() and not pathlib.Path(path).is_dir():
        raise ConfigError(f"{flag} {path} is not a folder: give a folder"
                          + (" (or a path that does not exist yet)" if created else ""))


def check_file(path, flag: str, must_exist: bool = False) -> None:
    """Raise ConfigError when a file argument (--input, --output) names a folder (or ends with '/'),
    or, with `must_exist`, nothing; an output file's folder must exist."""
    if not path:
        return
    p = pathlib.Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise ConfigError(f"{flag} {path} is a folder: give a file")
    if must_exist and not p.exists():
        raise ConfigError(f"{flag} {path} does not exist: give an existing file")
    if not p.parent.is_dir():
        raise ConfigError(f"{flag} {path}: its folder {p.parent} does not exist")


def check(cfg: ConfigDict, n_devices: int) -> None:
    """Unknown keys, then the first bad value of a run config: raises ConfigError (one line).

    A `sweep` section is not looked at: training ignores it (the sweep checks it with check_keys).
    """
    check_keys({k: v for k, v in to_dict(cfg).items() if k != "sweep"})
    errors = problems(cfg, n_devices)
    if errors:
        raise ConfigError(errors[0] + (f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""))
