"""AdamW with global-norm clipping and a warmup + cosine / warmup-stable-decay / constant schedule."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from simscale.config import PACKABLE

SCHEDULES = ("cosine", "wsd", "constant")  # train.schedule (simscale.validation refuses others)
DECAY = ("matrices", "all", "none")  # train.decay
# The train keys of config.PACKABLE: in a packed group they enter the compiled step as traced inputs,
# `hyperparameters(tc)`, instead of as constants.
PER_RUN = tuple(k.split(".")[1] for k in PACKABLE if k.startswith("train."))


def hyperparameters(tc) -> dict:
    """PER_RUN's values of a train section, as floats (stacked per replica in a packed group)."""
    return {k: float(tc[k]) for k in PER_RUN}


def schedule(tc, total_steps: int, hp: dict | None = None):
    """Learning rate for update number `step` (0-based): linear warmup, then the chosen shape.

    cosine: floor + (1 - floor) * (1 + cos(2 pi cosine_cycles progress)) / 2 with floor = lr_floor:
      with cosine_cycles 0.5 a half cosine from the peak to lr_floor * peak at the last step; with
      0.25 and lr_floor 0, Hugging Face's get_cosine_schedule_with_warmup(num_cycles=0.25), which
      ends at half the peak.
    wsd: constant peak, then linear decay to lr_floor * peak over the last decay_fraction of steps.
    constant: the peak after warmup.
    `hp` (default hyperparameters(tc)) gives the peak and warmup, and `total_steps` may be traced too:
    per-replica values in a packed group.
    """
    hp = hyperparameters(tc) if hp is None else hp
    peak, floor, kind = hp["lr"], float(tc.lr_floor), tc.schedule
    rnd = round if isinstance(total_steps, int) else jnp.round  # both round half to even
    warmup = jnp.minimum(jnp.asarray(hp["warmup_steps"], jnp.float32), total_steps)
    decay_start = (warmup if kind == "cosine"
                   else jnp.maximum(warmup, total_steps - rnd(tc.decay_fraction * total_steps)))

    def lr(step):
        s = jnp.asarray(step, jnp.float32)
        warm = jnp.minimum(1.0, (s + 1.0) / jnp.maximum(warmup, 1.0))
        if kind == "constant":
            return peak * warm
        progress = jnp.clip((s - decay_start) / jnp.maximum(total_steps - decay_start, 1.0), 0.0, 1.0)
        cosine = 0.5 * (1.0 + jnp.cos(2.0 * jnp.pi * float(tc.cosine_cycles) * progress))
        shape = cosine if kind == "cosine" else 1.0 - progress
        return peak * warm * (floor + (1.0 - floor) * shape)

    return lr


def decay_mask(tc, logical_axes):
    """Which parameters get weight decay: 'matrices' skips the norm scales."""
    is_leaf = lambda x: isinstance(x, tuple)  # noqa: E731
    if tc.decay == "matrices":
        return jax.tree.map(lambda axes: "norm" not in axes, logical_axes, is_leaf=is_leaf)
    return jax.tree.map(lambda _: tc.decay == "all", logical_axes, is_leaf=is_leaf)


def optimizer(tc, total_steps: int, logical_axes, hp: dict | None = None) -> optax.GradientTransformation:
    """clip_by_global_norm (when clip_norm > 0) followed by AdamW on the schedule; `hp` as in schedule.
    Its state has the same structure whatever `hp` holds, so a packed run's state is a lone run's."""
    hp = hyperparameters(tc) if hp is None else hp
    adamw = optax.adamw(schedule(tc, total_steps, hp), b1=tc.b1, b2=tc.b2, eps=tc.eps,
                        weight_decay=hp["weight_decay"], mask=decay_mask(tc, logical_axes))
    return optax.chain(optax.clip_by_global_norm(tc.clip_norm), adamw) if tc.clip_norm > 0 else adamw
