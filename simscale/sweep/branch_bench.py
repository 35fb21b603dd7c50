"""python -m simscale.sweep.branch_bench --workdir W [--config sweeps/grid.py:preset=tokens_wsd]
   [--first scratch|branched] [--only REGEX] [sweep flags ...]

Trains one wsd sweep twice, each a fresh `python -m simscale.sweep` in its own folder: from scratch
(W/scratch, sweep.branch=False) and branched (W/branched: trunks and cooldown branches), and prints
them side by side: wall time, steps and training FLOPs (counted from the attempts logs), and how many
runs end with the same final and evaluation loss both ways. Flags after the known ones go to both
sweeps (the --config.* ones to the data preparation too, done before either is timed). Zero-shot
evaluation is left out (--config.eval.tasks=): it costs the same either way.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from simscale import cli
from simscale.humanize import duration, human
from simscale.sweep import store, tables

ROOT = pathlib.Path(__file__).resolve().parents[2]
WAYS = {"scratch": "False", "branched": "True"}


def _command(*args: str) -> float:
    """Wall seconds of `python -m ARGS` (a fresh process: imports and compilation included)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                        if p))
    command = [sys.executable, "-m", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stdout[-2000:]}"
                           f"{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def _sweep(config: str, workdir: pathlib.Path, branch: str, extra: list[str]) -> float:
    return _command("simscale.sweep", "--config", config, f"--config.sweep.branch={branch}",
                    "--config.eval.tasks=", "--workdir", str(workdir), *extra)


def measure(workdir: pathlib.Path) -> dict:
    """Steps and FLOPs a finished sweep trained (attempt by attempt), and each run's losses."""
    steps = flops = 0.0
    losses = {}
    for run_id in sorted(p.name for p in (workdir / "runs").iterdir()):
        rdir = store.run_dir(workdir, run_id)
        result = store.read_json(rdir / "result.json")
        events = store.attempts(rdir)
        trained = sum(end["step"] - start["step"] for start, end in zip(events, events[1:])
                      if start["event"] == "start" and end["event"] == "done")
        steps += trained
        flops += result["flops"][result["flops_convention"]] * trained / result["steps"]
        losses[run_id] = (result["final_loss"], result["eval_loss"])
    return dict(runs=len(losses), steps=int(steps), flops=flops, losses=losses)


def bench(config: str, workdir: pathlib.Path, extra: list[str], first: str = "scratch", log=print) -> dict:
    out = {}
    # the data once, before either sweep is timed
    _command("simscale.data", "prepare", "--config", config, *(a for a in extra if a.startswith("--config.")))
    for way in sorted(WAYS, key=lambda w: w != first):  # `first` first: under a varying load, swap them
        branch = WAYS[way]
        folder = workdir / way
        if folder.exists():
            raise FileExistsError(f"{folder} exists: give an empty --workdir")
        wall = _sweep(config, folder, branch, extra)
        out[way] = dict(measure(folder), wall_s=wall)
        log(f"{way}: {out[way]['runs']} runs, {out[way]['steps']} steps, {duration(wall)}")
    scratch, branched = out["scratch"], out["branched"]
    same = sum(branched["losses"].get(k) == v for k, v in scratch["losses"].items())
    rows = [["wall time", duration(scratch["wall_s"]), duration(branched["wall_s"]),
             f"{branched['wall_s'] / scratch['wall_s']:.2f}x"],
            ["steps trained", str(scratch["steps"]), str(branched["steps"]),
             f"{branched['steps'] / scratch['steps']:.2f}x"],
            ["training FLOPs", human(scratch["flops"]), human(branched["flops"]),
             f"{branched['flops'] / scratch['flops']:.2f}x"]]
    log(tables.table(["", "from scratch", "branched", "branched / scratch"], rows))
    log(f"final and evaluation loss identical both ways: {same} of {scratch['runs']} runs")
    summary = dict(config=config, extra=extra, same_losses=same, **out)
    (workdir / "branch_bench.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--config", default="sweeps/grid.py:preset=tokens_wsd")
    parser.add_argument("--first", choices=sorted(WAYS), default="scratch", help="the sweep timed first")
    args, extra = parser.parse_known_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    bench(args.config, args.workdir, extra, args.first)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
