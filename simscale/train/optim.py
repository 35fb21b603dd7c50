"""AdamW with global-norm clipping and a warmup + cosine / warmup-stable-decay / constant schedule."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from simscale.config import PACKABLE

SCHEDULES = ("cosine", "wsd", "constant")  # train.schedule (simscale.validation refuses others)
DECAY_SHAPES = ("linear", "1-sqrt")  # train.decay_shape: wsd's cooldown
DECAY = ("matrices", "all", "none")  # train.decay
# The train keys of config.PACKABLE: values that may differ between the runs of a packed group.
PER_RUN = tuple(k.split(".")[1] for k in PACKABLE if k.startswith("train."))
# A run's step arguments (`step_args`): the per-run numbers its compiled train step takes as traced
# inputs, not constants. A lone run's step binds its own (simscale.train.step), a packed group stacks
# its replicas' (simscale.train.packed): one compiled program for any budget (runs of one shape and
# different budgets, wsd trunks and branches) and, in a packed group, any PER_RUN values.
STEP_ARGS = ("lr", "weight_decay", "warmup", "decay_start", "total_steps")


def step_args(tc, total_steps: int) -> dict:
    """A run's STEP_ARGS: its peak lr and weight_decay, and the numbers of its budget that its schedule
    reads: warmup (warmup_steps, at most total_steps), decay_start (the first update whose LR decays;
    the warmup's end for cosine) and total_steps."""
    warmup = min(int(tc.warmup_steps), total_steps)
    start = warmup if tc.schedule == "cosine" else decay_start(tc, total_steps)
    return {"lr": float(tc.lr), "weight_decay": float(tc.weight_decay), "warmup": warmup,
            "decay_start": start, "total_steps": total_steps}


def learning_rate(tc, step, args):
    """Learning rate for update number `step` (0-based), `args` = step_args (numbers, or traced scalars
    inside a compiled step): linear warmup, then the chosen shape.

    cosine: floor + (1 - floor) * (1 + cos(2 pi cosine_cycles progress)) / 2 with floor = lr_floor:
      with cosine_cycles 0.5 a half cosine from the peak to lr_floor * peak at the last step; with
      0.25 and lr_floor 0, Hugging Face's get_cosine_schedule_with_warmup(num_cycles=0.25), which
      ends at half the peak.
    wsd: constant peak, then a decay to lr_floor * peak over the last decay_fraction of steps (from
      decay_start), shaped by decay_shape: linear 1 - p, or 1-sqrt 1 - sqrt(p) (Hägele et al. 2024).
      Before decay_start the LR does not depend on total_steps once total_steps >= warmup_steps:
      runs of different budgets share their stable phase (simscale.sweep.branches).
    constant: the peak after warmup.
    """
    floor, kind = float(tc.lr_floor), tc.schedule
    peak, warmup, start, total = (jnp.asarray(args[k], jnp.float32)
                                  for k in ("lr", "warmup", "decay_start", "total_steps"))
    s = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, (s + 1.0) / jnp.maximum(warmup, 1.0))
    if kind == "constant":
        return peak * warm
    progress = jnp.clip((s - start) / jnp.maximum(total - start, 1.0), 0.0, 1.0)
    if kind == "cosine":
        shape = 0.5 * (1.0 + jnp.cos(2.0 * jnp.pi * float(tc.cosine_cycles) * progress))
    else:
        shape = 1.0 - (jnp.sqrt(progress) if tc.decay_shape == "1-sqrt" else progress)
    return peak * warm * (floor + (1.0 - floor) * shape)


def schedule(tc, total_steps: int):
    """step -> learning_rate of a run of `total_steps` updates."""
    args = step_args(tc, total_steps)
    return lambda step: learning_rate(tc, step, args)


def decay_start(tc, total_steps: int) -> int:
    """wsd: the first update whose LR decays (the stable phase ends at the warmup's end at the earliest)."""
    warmup = min(int(tc.warmup_steps), total_steps)
    return max(warmup, total_steps - round(tc.decay_fraction * total_steps))


def decay_mask(tc, logical_axes):
    """Which parameters get weight decay: 'matrices' skips the norm scales."""
    is_leaf = lambda x: isinstance(x, tuple)  # noqa: E731
    if tc.decay == "matrices":
        return jax.tree.map(lambda axes: "norm" not in axes, logical_axes, is_leaf=is_leaf)
    return jax.tree.map(lambda _: tc.decay == "all", logical_axes, is_leaf=is_leaf)


def optimizer(tc, args, logical_axes) -> optax.GradientTransformation:
    """clip_by_global_norm (when clip_norm > 0) followed by AdamW on the schedule; `args` a run's total
    steps (an int), or its step_args (traced inside a compiled step). Its state's structure does not
    depend on `args`, so a packed run's state is a lone run's and runs of every budget share it."""
    args = step_args(tc, args) if isinstance(args, int) else args
    adamw = optax.adamw(lambda count: learning_rate(tc, count, args), b1=tc.b1, b2=tc.b2, eps=tc.eps,
                        weight_decay=args["weight_decay"], mask=decay_mask(tc, logical_axes))
    return optax.chain(optax.clip_by_global_norm(tc.clip_norm), adamw) if tc.clip_norm > 0 else adamw
