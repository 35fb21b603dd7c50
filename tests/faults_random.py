"""Randomised fault injection on the smoke sweep (`make faults`; not part of `make test`).

    python tests/faults_random.py [--kills 10] [--seed 0] [--workdir DIR]

Trains the smoke sweep (4 runs, 40 steps each) once without interruption (the reference), then
again in another folder, killed with SIGKILL at `--kills` moments; after each kill one random file
of a random finished or running run is corrupted, and the sweep is restarted. A moment is one of:
  time        the parent kills the sweep after a random delay
  checkpoint  the sweep kills itself just after the n-th checkpoint save started (orbax writes it
              asynchronously)
  evaluation  the sweep kills itself inside the n-th validation evaluation
  write       the sweep kills itself in the n-th atomic JSON write, after the temporary file was
              written and before it is renamed into place
with n (or the delay) drawn within the round's share of the work left, so that the kills spread
over the sweep. The seed fixes the moments and the corruptions; where a `time` kill lands also
depends on the machine's speed. A corrupted file is of a random kind (a checkpoint file, an events
file, metrics.jsonl, status.json, lock), a random file of that kind: a random byte range
overwritten, or the file cut short. Never attempts.jsonl (the record checked below), config.json
or result.json (their corruption is refused with an error naming the file, for the user to repair).

At the end it checks: every run `done` exactly once in attempts.jsonl, its final and eval
losses equal to the reference's, no step twice in metrics.jsonl, no temporary file or folder
left, and prints the counts. Exits 1 when a check fails.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from simscale.jsonio import read_jsonl  # noqa: E402
# the smoke grid, its cadence at twice its steps: 8 checkpoints a run
RUNS, STEPS, CHECKPOINT_EVERY = 4, 40, 5
SWEEP = ["--config=sweeps/grid.py:preset=smoke", "--estimate=none", f"--config.train.steps={STEPS}"]
MOMENTS = ("time", "checkpoint", "evaluation", "write")
SPARED = {"attempts.jsonl", "config.json", "result.json"}
TEMPORARY = re.compile(r"^\.|orbax-checkpoint-tmp|\.part$")  # a run folder holds no hidden file of its own


def sweep(workdir: pathlib.Path, moment: str | None = None, n: int = 0, delay: float = 0.0):
    """Run the smoke sweep (killed at `moment`); (returncode, stderr)."""
    cmd = [sys.executable, __file__, "--child", moment or "none", str(n), "--", *SWEEP,
           f"--workdir={workdir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            proc.wait(timeout=delay if moment == "time" else 600)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        err.seek(0)
        return proc.returncode, err.read()


def child(moment: str, n: int, argv: list[str]) -> None:
    """The sweep, set to kill itself at the n-th call of what `moment` names."""
    calls = collections.Counter()

    def kill_at_nth(key):
        calls[key] += 1
        if calls[key] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    if moment == "checkpoint":
        from simscale.train import checkpoint

        save = checkpoint.Checkpoints.save

        def killing_save(self, *a, **k):
            save(self, *a, **k)
            kill_at_nth("save")  # the asynchronous write is under way

        checkpoint.Checkpoints.save = killing_save
    elif moment == "evaluation":
        from simscale.train import loop

        evaluate = loop.evaluate

        def killing_evaluate(prog, params, cfg, local_batches, token_bytes):
            prog.eval(params, loop._device_batch(prog, local_batches[0]))  # part of the work done
            kill_at_nth("evaluate")
            return evaluate(prog, params, cfg, local_batches, token_bytes)

        loop.evaluate = killing_evaluate
    elif moment == "write":
        from simscale import jsonio

        replace = os.replace

        class KillingOs:  # jsonio's `os`, whose replace dies at the n-th call
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(src, dst):
                kill_at_nth("replace")
                replace(src, dst)

        jsonio.os = KillingOs()
    sys.argv = ["simscale.sweep", *argv]
    from simscale.sweep.__main__ import main

    main()


def corrupt(workdir: pathlib.Path, rng: random.Random) -> str | None:
    """Damage one random file of a random run that has started; its path relative to workdir (None: no
    run)."""
    runs = [r for r in sorted((workdir / "runs").glob("*"))
            if (r / "status.json").exists() or (r / "result.json").exists()]
    if not runs:
        return None
    run = rng.choice(runs)
    # a kind first, so that the many checkpoint files do not crowd out the rest
    kinds = collections.defaultdict(list)
    for f in sorted(run.rglob("*")):
        if f.is_file() and f.name not in SPARED:
            kinds[kind(f)].append(f)
    target = rng.choice(kinds[rng.choice(sorted(kinds))])
    blob = bytearray(target.read_bytes())
    if blob and rng.random() < 0.5:
        start = rng.randrange(len(blob))
        end = min(len(blob), start + rng.randint(1, 64))
        blob[start:end] = bytes(rng.randrange(256) for _ in range(end - start))
    else:
        blob = blob[:rng.randrange(len(blob))] if blob else bytearray(b"\x00garbage")
    target.write_bytes(bytes(blob))
    return str(target.relative_to(workdir))


def remaining(workdir: pathlib.Path | None) -> int:
    """Checkpoints the smoke sweep in `workdir` still has to write (None: all of them)."""
    runs = sorted((workdir / "runs").glob("*")) if workdir and (workdir / "runs").is_dir() else []
    done = sum(max([int(c.name) for c in (r / "checkpoints").glob("*") if c.name.isdigit()], default=0)
               for r in runs) // CHECKPOINT_EVERY
    return RUNS * STEPS // CHECKPOINT_EVERY - done


def kind(path: pathlib.Path) -> str:
    """'a checkpoint file', 'an events file', 'a temporary file' (a killed writer's) or the file's name."""
    return ("a checkpoint file" if "checkpoints" in path.parts else
            "an events file" if path.name.startswith("events.out.tfevents") else
            "a temporary file" if path.name.startswith(".") else path.name)


def results(workdir: pathlib.Path) -> dict:
    return {r.name: json.loads((r / "result.json").read_text()) for r in sorted((workdir / "runs").glob("*"))
            if (r / "result.json").exists()}


def check(workdir: pathlib.Path, reference: dict) -> list[str]:
    """Every problem of the finished faulted sweep."""
    problems = []
    got = results(workdir)
    if sorted(got) != sorted(reference):
        problems.append(f"finished runs {sorted(got)} != the reference's {sorted(reference)}")
    for run_id, ref in reference.items():
        rdir = workdir / "runs" / run_id
        events = [a["event"] for a in read_jsonl(rdir / "attempts.jsonl")]
        if events.count("done") != 1:
            problems.append(f"{run_id}: 'done' {events.count('done')} times in attempts.jsonl ({events})")
        res = got.get(run_id, {})
        for key in ("status", "steps", "final_loss", "eval_loss"):
            if res.get(key) != ref[key]:
                problems.append(f"{run_id}: {key} {res.get(key)!r} != the uninterrupted sweep's {ref[key]!r}")
        steps = [r.get("step") for r in read_jsonl(rdir / "metrics.jsonl")]  # damaged lines left out
        twice = sorted(s for s, c in collections.Counter(steps).items() if c > 1)
        if twice:
            problems.append(f"{run_id}: step(s) {twice} more than once in metrics.jsonl")
    left = [str(p.relative_to(workdir)) for p in workdir.rglob("*") if TEMPORARY.search(p.name)]
    if left:
        problems.append(f"temporary files left: {left}")
    return problems


def tally(counts: collections.Counter, stderr: str) -> None:
    """What a sweep said it repaired."""
    counts["fallbacks to an earlier checkpoint"] += stderr.count("is unreadable")
    counts["status.json rebuilt"] += stderr.count("rebuilt from result.json")
    counts["claims that removed a killed writer's temporaries"] += stderr.count("left by a process no longer "
                                                                                "running")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10, help="random kill moments")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None,
                    help="folder for both sweeps (default: a temporary one, removed)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="simscale-faults-"))
    ref_dir, work = base / "reference", base / "faulted"
    shutil.rmtree(ref_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    print(f"faults: seed {args.seed}, {args.kills} kills, in {base}", flush=True)
    code, err = sweep(ref_dir)
    ref_time = time.perf_counter() - t0
    if code != 0:
        print(f"the uninterrupted sweep failed (exit {code}):\n{err}")
        return 1
    reference = results(ref_dir)
    print(f"reference: {len(reference)} runs in {ref_time:.0f} s", flush=True)
    counts = collections.Counter()
    for i in range(1, args.kills + 1):
        # the n-th event (or a delay) within this round's share of the work left, so that kills spread out
        moment, share = rng.choice(MOMENTS), remaining(work) / (args.kills - i + 1)
        n = rng.randint(1, max(1, round(share * {"checkpoint": 1, "evaluation": 0.5,
                                                 "write": 1.5}.get(moment, 1))))
        delay = rng.uniform(3.0, 3.0 + 2 * share * ref_time / remaining(None))
        t = time.perf_counter()
        code, err = sweep(work, moment, n, delay)
        killed = code == -signal.SIGKILL
        counts[f"{moment} {'killed' if killed else 'finished first'}"] += 1
        tally(counts, err)
        damaged = corrupt(work, rng)
        counts[f"corrupted {kind(work / damaged) if damaged else 'nothing'}"] += 1
        print(f"[{i}/{args.kills}] {moment}" + (f" #{n}" if moment != "time" else f" after {delay:.1f} s")
              + f": {'killed' if killed else f'exit {code}'} after {time.perf_counter() - t:.1f} s; "
              f"corrupted {damaged}", flush=True)
        if not killed and code != 0:
            counts["restarts that failed"] += 1
            print("  " + "\n  ".join(err.strip().splitlines()[-5:]), flush=True)
    code, err = sweep(work)
    tally(counts, err)
    problems = [] if code == 0 else [f"the final sweep exited {code}: {err.strip().splitlines()[-3:]}"]
    problems += check(work, reference)
    print(f"\nsummary after {time.perf_counter() - t0:.0f} s:")
    for key, value in sorted(counts.items()):
        print(f"  {key}: {value}")
    print(f"  runs checked: {len(reference)}; problems: {len(problems)}")
    for p in problems:
        print(f"  PROBLEM {p}")
    if not args.workdir and not problems:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[5:])
    else:
        sys.exit(main())
