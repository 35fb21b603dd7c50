"""Training: mesh and shardings, optimiser, compiled steps, checkpoints, metrics and the run loop.

    result = simscale.train.train(cfg, run_dir)        # writes run_dir per docs/contracts.md
    params, cfg = simscale.train.load_params(run_dir)  # newest readable checkpoint
"""
from simscale.train.checkpoint import load_params  # noqa: F401
from simscale.train.loop import NonFiniteLoss, train  # noqa: F401
