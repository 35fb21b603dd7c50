"""Sweeps: expand a grid into runs and execute them resumably (docs/sweeps.md).

    runs = grid.expand(cfg)                      # validated, stable run ids
    outcomes = executors.execute(runs, workdir)  # inline | process | ray
    python -m simscale.sweep --config sweeps/grid.py:preset=cpu --workdir W
"""
