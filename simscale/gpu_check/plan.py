"""What `python -m simscale.gpu_check` measures: the full plan (the paper's shapes, one GPU, <= 8 min)
and the tiny plan (`--tiny`: the same stages on tiny shapes, seconds on a CPU, for the tests).

Configs come from sweeps/grid.py as a sweep would resolve them (grid.expand), so the programs timed
are the ones the paper preset trains.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

from ml_collections import ConfigDict

ROOT = pathlib.Path(__file__).resolve().parents[2]
GRID = ROOT / "sweeps" / "grid.py"


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str  # full | tiny
    main: ConfigDict  # stage train and attention: one run config (the paper's 1024x8 in full)
    grid: list[ConfigDict]  # stage shapes: one run config per distinct shape of the grid
    agreement: ConfigDict  # stage agreement: a shape whose float32 CPU reference is cheap (train.steps
    #                        AdamW steps on one fixed batch; each step's loss is compared)
    sweep_args: tuple[str, ...]  # stage sweep: `python -m simscale.sweep` flags besides --workdir
    timed_steps: int  # at least this many timed steps per measurement...
    min_time_s: float  # ...filling at least this long
    budgets: dict[str, float]  # seconds per stage...
    total_s: float  # ...and for all stages together (a stage gets at most what is left): 8 min less start-up


def preset(name: str) -> ConfigDict:
    """A preset of sweeps/grid.py, as `--config sweeps/grid.py:preset=NAME` loads it."""
    spec = importlib.util.spec_from_file_location("simscale_sweeps_grid", GRID)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(f"preset={name}")


def shapes(sweep_cfg: ConfigDict) -> list[ConfigDict]:
    """The run config of each distinct shape of a sweep (its first run), cheapest first."""
    from simscale.config import program_key
    from simscale.model import counting
    from simscale.sweep import grid

    first = {}
    for run in grid.expand(sweep_cfg):
        first.setdefault(program_key(run.cfg, speed_only=True), run.cfg)
    return sorted(first.values(), key=lambda c: counting.flops_per_token(c.model, c.train.seq_len))


def _shape(cfgs: list[ConfigDict], hidden: int, layers: int) -> ConfigDict:
    (cfg,) = [c for c in cfgs if (c.model.hidden, c.model.layers) == (hidden, layers)]
    return cfg


def _agreement_config(base: ConfigDict, steps: int) -> ConfigDict:
    """`base` trained on one fixed batch with AdamW at a constant 1e-3 after one warmup step, so that
    the losses of a few steps move (the paper's 1,000 warmup steps would hold them at the start)."""
    cfg = ConfigDict(base.to_dict())
    cfg.train.update(steps=steps, warmup_steps=1, lr=1e-3, schedule="constant")
    return cfg


def full() -> Plan:
    paper = preset("paper")
    grid = shapes(paper)
    agreement = ConfigDict(_shape(grid, 256, 4).to_dict())  # head dim 32: cuDNN's attention takes it
    agreement.train.batch_size = 16
    return Plan(
        name="full", main=_shape(grid, 1024, 8), grid=grid, agreement=_agreement_config(agreement, 4),
        sweep_args=(f"--config={GRID}:preset=smoke", "--config.sweep.axes.width=(32,)"),
        timed_steps=5, min_time_s=1.0,
        budgets=dict(train=90, shapes=180, attention=60, agreement=45, sweep=75), total_s=460)


def tiny() -> Plan:
    smoke = preset("smoke")  # widths 16 and 32, 1 layer, 2 heads, vocabulary 256, 8 x 32 tokens per step
    grid = shapes(smoke)
    agreement = ConfigDict(grid[-1].to_dict())
    agreement.model.update(layers=2, heads=4)
    agreement.train.batch_size = 4
    return Plan(  # main is the grid's larger shape: stages train and shapes share its compilation
        name="tiny", main=grid[-1], grid=grid, agreement=_agreement_config(agreement, 3),
        sweep_args=(f"--config={GRID}:preset=smoke", "--config.sweep.axes.width=(32,)",
                    "--config.train.steps=6"),
        timed_steps=2, min_time_s=0.0,
        budgets=dict(train=60, shapes=60, attention=60, agreement=90, sweep=120), total_s=420)
