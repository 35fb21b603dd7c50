"""python -m simscale.gpu_check --out DIR [--tiny] [--stages train,shapes,attention,agreement,sweep]

The prepared accelerator check (`make gpu-check`; docs/training.md, "GPU check"): on one H100/H200 in
at most 8 minutes, bfloat16 training of the paper's 1024x8 at 512 x 128 tokens per step (tokens/s,
MFU, memory), every paper shape at the paper's batch, cuDNN against XLA attention, the generic path's
losses against the CPU kernels' float32 reference, and a two-run sweep through the sweep CLI.
`--tiny` runs the same stages on tiny shapes (seconds on a CPU; the tests run it).

Writes DIR/gpu_check.json (rewritten after every stage, so an interrupted check leaves what it
measured) and DIR/gpu_check.md, which it also prints. Every stage is timed against its budget; one
that raises, finds a problem or overruns records its error, the others still run, and the exit status
is 1 when any failed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import signal
import sys
import time
import traceback

from simscale.gpu_check import plan as plan_lib
from simscale.gpu_check import report, stages


class StageTimeout(Exception):
    pass


def _alarm(signum, frame):
    # Raised where the main thread is; if that is inside a finaliser, Python prints and drops it, so the
    # alarm comes again each second until one lands (run_stage clears it).
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    raise StageTimeout


def run_stage(name: str, fn, plan, ctx, budget_s: float) -> dict:
    """fn(plan, ctx) under a SIGALRM at its budget: its record with status, time_s and budget_s."""
    t0 = time.perf_counter()
    ctx.deadline = t0 + budget_s
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        rec = fn(plan, ctx)
    except StageTimeout:
        rec = dict(error=f"stopped at its budget of {budget_s:g} s")
    except Exception as e:  # noqa: BLE001 - the check goes on to the next stage
        rec = dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return dict(status="failed" if rec.get("error") else "ok", time_s=time.perf_counter() - t0,
                budget_s=budget_s, **rec)


def write(results: dict, out: pathlib.Path) -> str:
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1) + "\n")
    text = report.markdown(results)
    (out / "gpu_check.md").write_text(text)
    return text


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m simscale.gpu_check", description=__doc__.split("\n\n")[1])
    ap.add_argument("--out", required=True, type=pathlib.Path,
                    help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes and few steps (seconds on a CPU)")
    ap.add_argument("--stages", default=",".join(stages.STAGES), help="comma-separated subset, in this order")
    args = ap.parse_args(argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in stages.STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {list(stages.STAGES)}")
    return args


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from simscale import compile_cache, cpu_runtime
    from simscale.gpu_check import measure

    cpu_runtime.configure()
    args.out.mkdir(parents=True, exist_ok=True)
    compile_cache.enable(args.out)  # a second check on the machine loads the compiled steps
    t0 = time.perf_counter()  # after importing jax: plan.total_s leaves time for that
    plan = plan_lib.tiny() if args.tiny else plan_lib.full()
    ctx = stages.Context(device=measure.device_info(), out=args.out)
    results = dict(mode=plan.name, started=datetime.datetime.now().isoformat(timespec="seconds"),
                   device=ctx.device, total_time_s=0.0, stages={})
    for name in args.stages:
        budget = min(plan.budgets[name], plan.total_s - (time.perf_counter() - t0))
        if budget <= 0:
            results["stages"][name] = dict(status="failed", budget_s=0.0, time_s=0.0,
                                           error=f"no time left of the check's {plan.total_s:g} s")
            continue
        results["stages"][name] = dict(status="running", budget_s=budget)
        write(results, args.out)
        results["stages"][name] = run_stage(name, stages.STAGES[name], plan, ctx, budget)
        results["total_time_s"] = time.perf_counter() - t0
        write(results, args.out)
    results["failed"] = [n for n, r in results["stages"].items() if r["status"] != "ok"]
    print(write(results, args.out))
    print(f"results: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
