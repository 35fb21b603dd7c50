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

from simscale.config import (REMOVED, RENAMED, SWEEP_AXES, VARIANTS, ConfigError, flat, run_config,
                             sweep_config, to_dict)


def known_keys() -> list[str]:
    """Every key a run or sweep config may set, dotted (sweep.axes.<axis> for each known axis)."""
    sweep = flat(to_dict(sweep_config()), "sweep.")
    keys = [k for k in sweep if not k.startswith("sweep.axes.")] + [f"sweep.axes.{a}" for a in SWEEP_AXES]
    return sorted(flat(to_dict(run_config())).keys() | set(keys))


def unknown_key_message(key: str, known: list[str]) -> str:
    """'unknown config key K (did you mean N?)': N is the closest key of K's section (else of all), or K's
    new name when it was renamed (config.RENAMED)."""
    if key in RENAMED:
        return f"unknown config key {key}: it is {' / '.join(RENAMED[key])} now"
    if key in REMOVED:
        return f"unknown config key {key}: {REMOVED[key]}"
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


def choices() -> dict[str, tuple]:
    """The values each enumerated key may take, from the module that acts on the key."""
    from simscale.data import sources
    from simscale.model import backend, counting
    from simscale.train import optim

    return {"model.kernels": backend.KERNELS, "model.attention": backend.ATTENTION,
            "train.schedule": optim.SCHEDULES, "train.decay": optim.DECAY,
            "train.decay_shape": optim.DECAY_SHAPES,
            "train.flops_convention": tuple(counting.FLOPS_CONVENTIONS),
            "data.source": ("synthetic", "auto", *sources.SOURCES), "data.variant": VARIANTS,
            "data.files.format": sources.FORMATS, "data.validation_unit": ("documents", "rows")}


def problems(cfg: ConfigDict, n_devices: int) -> list[str]:
    """Every problem with one resolved run config (empty when it can train)."""
    return (_choice_problems(cfg, ("model.", "train.")) + _model_problems(cfg.model)
            + _train_problems(cfg, n_devices) + data_problems(cfg))


def _choice_problems(cfg: ConfigDict, sections: tuple[str, ...]) -> list[str]:
    values = flat(to_dict(cfg))
    return [f"{key}={values[key]!r}: choose one of {allowed}" for key, allowed in choices().items()
            if key.startswith(sections) and key in values and values[key] not in allowed]


def _model_problems(m) -> list[str]:
    errors = [f"model.{key}={m[key]} must be positive" for key in ("hidden", "layers", "heads", "vocab_size")
              if m[key] <= 0]
    if m.heads > 0 and m.hidden % m.heads:
        errors.append(f"model.hidden={m.hidden} is not divisible by model.heads={m.heads}")
    elif m.heads > 0 and m.hidden > 0 and (m.hidden // m.heads) % 2:
        errors.append(f"model.hidden={m.hidden} / model.heads={m.heads} gives an odd head dimension "
                      f"{m.hidden // m.heads}: rotary embeddings need an even one")
    if m.kv_heads and m.heads % m.kv_heads:
        errors.append(f"model.heads={m.heads} is not divisible by model.kv_heads={m.kv_heads}")
    return errors


def _train_problems(cfg: ConfigDict, n_devices: int) -> list[str]:
    t = cfg.train
    errors = [f"train.{key}={t[key]} must be positive" for key in ("batch_size", "seq_len") if t[key] <= 0]
    if t.seq_len > cfg.model.max_len:
        errors.append(f"train.seq_len={t.seq_len} exceeds model.max_len={cfg.model.max_len}")
    if t.steps < 0 or t.tokens < 0:
        errors.append(f"train.steps={t.steps} and train.tokens={t.tokens} must not be negative")
    if not 0.0 <= t.lr_floor <= 1.0:
        errors.append(f"train.lr_floor={t.lr_floor} must be a fraction of the peak in [0, 1]")
    if not 0.0 < t.cosine_cycles <= 0.5:
        errors.append(f"train.cosine_cycles={t.cosine_cycles} must lie in (0, 0.5] (0.5: a half cosine down "
                      "to lr_floor; 0.25, Hugging Face's num_cycles=0.25: a quarter, ending halfway)")
    if not 0.0 <= t.decay_fraction <= 1.0:
        errors.append(f"train.decay_fraction={t.decay_fraction} must lie in [0, 1]")
    if t.warmup_steps < 0 or t.lr <= 0:
        errors.append(f"train.lr={t.lr} must be > 0 and train.warmup_steps={t.warmup_steps} >= 0")
    from simscale.train.mesh import mesh_shape  # the trainer's own rules
    from simscale.train.metrics import tracker_problems

    errors += tracker_problems(t.trackers)
    try:
        data, fsdp, _ = mesh_shape(cfg.mesh, n_devices)
    except ConfigError as e:
        errors.append(str(e))
    else:
        if t.grad_accum < 1 or t.batch_size % t.grad_accum:
            errors.append(f"train.batch_size={t.batch_size} is not divisible by "
                          f"train.grad_accum={t.grad_accum}")
        elif (t.batch_size // t.grad_accum) % (data * fsdp):
            errors.append(f"train.batch_size={t.batch_size} (per micro-batch {t.batch_size // t.grad_accum}) "
                          f"is not divisible by the {data * fsdp} data-parallel device(s) of the mesh")
    return errors


def data_problems(cfg: ConfigDict) -> list[str]:
    """Problems of the data section that need no files (the sources name missing files as they read)."""
    d, errors = cfg.data, _choice_problems(cfg, ("data.",))
    if not 0 <= d.validation_fraction < 1:
        errors.append(f"data.validation_fraction={d.validation_fraction}: give a fraction in [0, 1)")
    if d.validation_unit == "rows" and not d.validation_fraction:
        errors.append("data.validation_unit='rows' holds out data.validation_fraction of the rows: give a "
                      "fraction > 0")
    if d.max_train_tokens < 0:
        errors.append(f"data.max_train_tokens={d.max_train_tokens}: give 0 (all) or a token count")
    if d.min_span_len < 0 or d.max_oov_p < 0:
        errors.append("data.min_span_len and data.max_oov_p must not be negative")
    if d.source != "synthetic" and cfg.model.vocab_size < 300:
        errors.append(f"model.vocab_size={cfg.model.vocab_size} must be >= 300 for text (byte-level BPE "
                      "needs 256 byte tokens plus the special tokens)")
    return errors


def raise_first(errors: list[str]) -> None:
    """ConfigError with the first problem (and how many more there are), if any."""
    if errors:
        raise ConfigError(errors[0]
                          + (f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""))


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
    raise_first(problems(cfg, n_devices))


def sweep_pack(pack) -> int | str:
    """sweep.pack read: 'auto', or the runs per packed group (0: off); ConfigError naming the key else."""
    text = str(pack).strip()
    if text == "auto" or text.isdigit():
        return text if text == "auto" else int(text)
    raise ConfigError(f"sweep.pack={pack!r}: use 0 (off), a number of runs per group, or auto")


PACK_SHARDS = ("batch", "replicas")  # sweep.pack_shard: what a packed group splits over mesh.data


def sweep_pack_shard(shard: str, mesh_cfg) -> None:
    """ConfigError naming sweep.pack_shard unless it is one of PACK_SHARDS and fits the run's mesh."""
    if shard not in PACK_SHARDS:
        raise ConfigError(f"sweep.pack_shard={shard!r}: choose one of {PACK_SHARDS}")
    if shard == "replicas" and (mesh_cfg.fsdp != 1 or mesh_cfg.tensor != 1):
        raise ConfigError("sweep.pack_shard='replicas' splits the runs over mesh.data, each device "
                          "training whole models: set mesh.fsdp=1 and mesh.tensor=1, or use 'batch'")
