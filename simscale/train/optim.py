"""AdamW with global-norm clipping and a warmup + cosine / warmup-stable-decay / constant schedule."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "wsd", "constant")  # train.schedule (simscale.validation refuses others)
DECAY_SHAPES = ("linear", "1-sqrt")  # train.decay_shape: wsd's cooldown
DECAY = ("matrices", "all", "none")  # train.decay


def schedule_args(tc, total_steps: int) -> tuple[int, int, int]:
    """(warmup, decay_start, total_steps): the numbers of a run's budget that its schedule reads.

    They are arguments of the compiled train step (simscale.train.step), not constants in it: runs of
    one shape and different budgets share one compiled program."""
    warmup = min(int(tc.warmup_steps), total_steps)
    return warmup, warmup if tc.schedule == "cosine" else decay_start(tc, total_steps), total_steps


def learning_rate(tc, step, args):
    """Learning rate for update number `step` (0-based), `args` = schedule_args (ints or a traced int
    array): linear warmup, then the chosen shape.

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
    peak, floor, kind = float(tc.lr), float(tc.lr_floor), tc.schedule
    warmup, start, total = (jnp.asarray(args[i], jnp.float32) for i in range(3))
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
    args = schedule_args(tc, total_steps)
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


def optimizer(tc, total_steps, logical_axes) -> optax.GradientTransformation:
    """clip_by_global_norm (when clip_norm > 0) followed by AdamW on the schedule; `total_steps` an int,
    or schedule_args as a traced array (inside a compiled step)."""
    args = schedule_args(tc, total_steps) if isinstance(total_steps, int) else total_steps
    adamw = optax.adamw(lambda count: learning_rate(tc, count, args), b1=tc.b1, b2=tc.b2, eps=tc.eps,
                        weight_decay=tc.weight_decay, mask=decay_mask(tc, logical_axes))
    return optax.chain(optax.clip_by_global_norm(tc.clip_norm), adamw) if tc.clip_norm > 0 else adamw
