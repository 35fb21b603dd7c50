"""Run a list of runs: `inline` (this process), `process` (a pool of pinned workers), `ray`.

Each executor calls `run_unit` once per unit wherever it trains: a lone run (`run_one`) or, with
sweep.pack (simscale.sweep.packing), a packed group (`run_group`). A run is claimed by its lock,
skipped when done (or failed, unless retrying), trained or resumed, evaluated and its outcome recorded.
Runs that another worker holds come back as "busy" and are retried until they settle. A wsd branch
(simscale.sweep.branches; always a unit of its own, as its trunk) waits for its trunk's branch point
while the trunk trains, comes back as "waiting" while the trunk is queued, and fails with its trunk's
error.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from simscale.config import from_dict, program_key, to_dict
from simscale.sweep import store

if TYPE_CHECKING:  # workers import this module before their devices are pinned: keep it light
    from simscale.sweep.grid import PlannedRun

log = logging.getLogger("simscale.sweep")
EXECUTORS = ("inline", "process", "ray")
REPO_ROOT = str(pathlib.Path(__file__).resolve().parents[2])
CPUS_ENV = "SIMSCALE_WORKER_CPUS"  # the cores a CPU worker of the process executor runs on
POINT_POLL_S = 0.5  # how often a branch looks for its point while its trunk trains


def default_train(cfg, rdir, **branch):
    from simscale.train import train

    return train(cfg, rdir, **branch)


def default_train_group(members, shard: str = "batch"):
    from simscale.train.packed import train_group

    return train_group(members, shard=shard)


def run_unit(workdir: str, run_ids: list[str], cfg_dicts: list[dict], retry_failed: bool = False,
             train_fn=None, branch: dict | None = None, pack_shard: str = "batch") -> list[dict]:
    """run_one for a unit of one run (`branch` as there), run_group for a packed group (split over the
    devices by `pack_shard`, sweep.pack_shard); the outcome of each run."""
    if len(run_ids) == 1:
        return [run_one(workdir, run_ids[0], cfg_dicts[0], retry_failed, train_fn, branch)]
    return run_group(workdir, run_ids, cfg_dicts, retry_failed, train_fn, pack_shard)


def _settled(rdir: pathlib.Path, run_id: str, retry_failed: bool) -> dict | None:
    """The outcome of a claimed run that needs no training (skipped: done; failed, unless retrying),
    else None."""
    status = store.run_status(rdir, repair=True)  # a finished run is done whatever status.json says
    if status.get("status") == "done" and (rdir / "result.json").exists():
        # its attempt was killed before saying so
        if (store.attempts(rdir) or [{}])[-1].get("event") == "start":
            store.append_attempt(rdir, "done", late=True)
        return dict(run_id=run_id, outcome="skipped")
    if status.get("status") == "failed" and not retry_failed:
        return dict(run_id=run_id, outcome="failed", error=status.get("error", "failed earlier"))
    return None


def _start_attempt(rdir: pathlib.Path, run_id: str, branch_step: int = 0) -> None:
    """The attempt's start: at its last status step, or a branch's at its trunk's point."""
    step = store.run_status(rdir).get("step", 0)
    start = max(step, branch_step)
    store.append_attempt(rdir, "start", step=start)
    log.info("training %s%s", run_id, f" (interrupted at step {step}: resuming from its last checkpoint)"
             if step else f" from step {start} of its trunk" if start else "")


def _failed(rdir: pathlib.Path, run_id: str, error: str, trace: str) -> dict:
    """Record a run's failure (status.json, attempts.jsonl); its outcome."""
    store.write_json(rdir / "status.json", dict(
        store.read_json(rdir / "status.json", {}), status="failed", error=error, traceback=trace,
        updated=time.time()))
    store.append_attempt(rdir, "failed", error=error)
    log.error("run %s failed: %s", run_id, error)
    return dict(run_id=run_id, outcome="failed", error=error)


def _evaluated(rdir: pathlib.Path, outcome: dict, cfg_dict: dict) -> dict:
    """A trained or skipped run's outcome after its zero-shot evaluation (failed when that failed)."""
    error = _evaluate(rdir, from_dict(cfg_dict))
    return dict(run_id=outcome["run_id"], outcome="failed", error=error) if error else outcome


def run_group(workdir: str, run_ids: list[str], cfg_dicts: list[dict], retry_failed: bool = False,
              train_fn=None, shard: str = "batch") -> list[dict]:
    """run_one for the runs of a packed group: those this worker claims and that need training train
    together (simscale.train.packed.train_group; `train_fn(members)` in tests); a run failing alone
    fails alone, an error of the group fails all it trained."""
    from simscale import compile_cache, cpu_runtime

    cpu_runtime.configure()
    compile_cache.enable(workdir)
    outcomes, locks, todo = {}, [], []
    try:
        for run_id, cfg_dict in zip(run_ids, cfg_dicts):
            rdir = store.run_dir(pathlib.Path(workdir), run_id)
            lock = store.RunLock(rdir)
            if not lock.acquire():
                outcomes[run_id] = dict(run_id=run_id, outcome="busy")
                continue
            locks.append(lock)
            settled = _settled(rdir, run_id, retry_failed)
            if settled is None:
                todo.append((run_id, rdir, cfg_dict))
            else:
                outcomes[run_id] = (_evaluated(rdir, settled, cfg_dict) if settled["outcome"] == "skipped"
                                    else settled)
        for run_id, rdir, _ in todo:
            _start_attempt(rdir, run_id)
        members = [(from_dict(c), rdir) for _, rdir, c in todo]
        try:
            results = ((train_fn(members) if train_fn else default_train_group(members, shard))
                       if members else [])
        except Exception as e:  # noqa: BLE001 - the group's runs fail, the sweep goes on
            error, trace = f"{type(e).__name__}: {e}", traceback.format_exc()
            results = [dict(status="failed", error=error, traceback=trace)] * len(todo)
        for (run_id, rdir, cfg_dict), result in zip(todo, results):
            if result.get("status") == "done":
                store.append_attempt(rdir, "done", step=result.get("steps"))
                outcomes[run_id] = _evaluated(rdir, dict(run_id=run_id, outcome="done"), cfg_dict)
            else:
                outcomes[run_id] = _failed(rdir, run_id, result.get("error", "failed"),
                                           result.get("traceback", ""))
    finally:
        for lock in locks:
            lock.release()
    return [outcomes[run_id] for run_id in run_ids]


def run_one(workdir: str, run_id: str, cfg_dict: dict, retry_failed: bool = False, train_fn=None,
            branch: dict | None = None) -> dict:
    """Claim, train (or resume) and evaluate one run; returns {run_id, outcome, error?}.

    Outcomes: done (trained now), skipped (already done), failed, busy (another worker holds it),
    waiting (a branch whose trunk is queued in this sweep and has not reached its point).
    `branch`: {branch_points} of a trunk, {branch_of, branch_step, trunk_queued} of a branch.
    """
    from simscale import compile_cache, cpu_runtime

    cpu_runtime.configure()  # first thing in a fresh worker process
    compile_cache.enable(workdir)
    rdir = store.run_dir(pathlib.Path(workdir), run_id)
    lock = store.RunLock(rdir)
    if not lock.acquire():
        return dict(run_id=run_id, outcome="busy")
    with lock:
        outcome = _settled(rdir, run_id, retry_failed)
        if outcome is None:
            kwargs = _train_kwargs(workdir, branch or {}, store.run_status(rdir).get("step", 0))
            if kwargs == "waiting":
                return dict(run_id=run_id, outcome="waiting")
            if isinstance(kwargs, str):  # the trunk's failure
                return _failed(rdir, run_id, kwargs, "")
            _start_attempt(rdir, run_id, kwargs["branch_from"][1] if "branch_from" in kwargs else 0)
            try:
                result = (train_fn or default_train)(from_dict(cfg_dict), rdir, **kwargs)
            except Exception as e:  # noqa: BLE001 - the run fails, the sweep goes on
                return _failed(rdir, run_id, f"{type(e).__name__}: {e}", traceback.format_exc())
            store.append_attempt(rdir, "done", step=(result or {}).get("steps"))
            outcome = dict(run_id=run_id, outcome="done")
        elif outcome["outcome"] == "failed":
            return outcome
        return _evaluated(rdir, outcome, cfg_dict)


def _train_kwargs(workdir: str, branch: dict, start: int) -> dict | str:
    """train()'s branch arguments, "waiting", or a failure message. A branch with steps of its own
    resumes them; else it starts from its trunk's point, waiting while the trunk trains towards it;
    it trains from scratch (the same run) when its trunk finished without the point (trained before
    branching) or is neither queued in this sweep nor training elsewhere."""
    from simscale.train import branch as branch_lib

    if branch.get("branch_points"):
        return dict(branch_points=tuple(branch["branch_points"]))
    if not branch.get("branch_of"):
        return {}
    trunk, step = store.run_dir(pathlib.Path(workdir), branch["branch_of"]), branch["branch_step"]
    while True:
        if start or branch_lib.ready(trunk, step):  # with steps of its own, it resumes them
            return dict(branch_from=(str(trunk), step))
        state = store.run_status(trunk)
        if state.get("status") == "failed":
            return f"its trunk {trunk.name} failed before step {step}: {state.get('error', '')}"
        if state.get("status") == "done":
            return {}
        if not store.holder(trunk):
            return "waiting" if branch.get("trunk_queued") else {}
        time.sleep(POINT_POLL_S)


def _evaluate(rdir: pathlib.Path, cfg) -> str | None:
    """Zero-shot evaluation of a finished run when eval.tasks is set (tasks already in eval.json are
    skipped)."""
    if not cfg.eval.tasks:
        return None
    from simscale.evaluate import evaluate_run

    try:
        evaluate_run(rdir, cfg.eval.tasks, shots=cfg.eval.shots, max_examples=cfg.eval.max_examples)
    except Exception as e:  # noqa: BLE001 - recorded as the run's eval_error, the sweep goes on
        error = f"evaluation: {type(e).__name__}: {e}"
        store.write_json(rdir / "status.json",
                         dict(store.read_json(rdir / "status.json", {}), eval_error=error))
        log.error("run %s: %s", rdir.name, error)
        return error
    return None


def execute(runs: list[PlannedRun], workdir, executor: str = "inline", *, workers: int = 0,
            devices_per_worker: int = 1, ray_address: str = "", retry_failed: bool = False, train_fn=None,
            poll_s: float = 2.0, pack: str = "0", pack_shard: str = "batch") -> list[dict]:
    """Run everything, runs of one shape packed in groups of up to `pack` (sweep.pack), split over the
    devices by `pack_shard` (sweep.pack_shard); runs busy in another worker are retried until they
    settle. Outcomes in grid order. `train_fn` (tests) replaces train(cfg, run_dir) for lone runs and
    train_group(members) for packed groups."""
    from simscale.sweep import packing

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {EXECUTORS}")
    submit = {"inline": _inline, "process": _process, "ray": _ray}[executor]
    kwargs = dict(workers=workers, devices_per_worker=devices_per_worker, ray_address=ray_address)
    if executor == "inline":
        n_workers = 1
    else:  # a Ray cluster's size is not known here: order for two workers at least
        n_workers = (len(worker_slots(workers, devices_per_worker)) if executor == "process"
                     else max(workers, 2))
    todo = runs
    outcomes: dict[str, dict] = {}
    waiting = 0
    while todo:
        queued = {r.run_id for r in todo}
        units = {id(u[0]): u for u in packing.units(todo, pack)}
        units = [units[id(r)] for r in _order([u[0] for u in units.values()], n_workers)]
        jobs = [(str(workdir), [r.run_id for r in u], [to_dict(r.cfg) for r in u], retry_failed, train_fn,
                 _branch(u[0], queued), pack_shard) for u in units]  # a branched run is a unit of its own
        for unit_outcomes in submit(jobs, **kwargs):
            outcomes.update((o["run_id"], o) for o in unit_outcomes)
        for r in todo:  # a trunk whose worker died: its branches fail with its error
            trunk = outcomes.get(r.branch_of, {})
            if outcomes[r.run_id]["outcome"] == "waiting" and trunk.get("outcome") == "failed":
                outcomes[r.run_id] = dict(run_id=r.run_id, outcome="failed",
                                          error=f"its trunk {r.branch_of} failed: {trunk.get('error', '')}")
        todo = [r for r in todo if outcomes[r.run_id]["outcome"] in ("busy", "waiting")]
        if todo:
            if len(todo) != waiting:
                log.info("waiting for %d run(s) held by another worker or by their trunk: %s", len(todo),
                         [r.run_id for r in todo])
            waiting = len(todo)
            time.sleep(poll_s)
            while all(store.holder(store.run_dir(workdir, r.run_id)) for r in todo):
                time.sleep(poll_s)  # resubmit (a new worker pool) only once one of them is free
        retry_failed = False  # a failure seen in this sweep is not retried again
    return [outcomes[r.run_id] for r in runs]


def _branch(run: PlannedRun, queued: set[str]) -> dict | None:
    if run.branch_points:
        return dict(branch_points=list(run.branch_points))
    if run.branch_of:
        return dict(branch_of=run.branch_of, branch_step=run.branch_step,
                    trunk_queued=run.branch_of in queued)
    return None


def _order(runs: list[PlannedRun], workers: int) -> list[PlannedRun]:
    """One worker: runs sharing a shape go one after another, so the process reuses its compiled
    functions. Several: the costliest shapes (FLOPs of a run) first, so that the workers finish
    together, and the first runs of `workers` shapes before their second runs, so that a shape's
    later runs start once its first has compiled (they load it from the compile cache)."""
    from simscale.model import counting
    from simscale.sweep import estimate

    by_shape: dict[str, list[PlannedRun]] = {}
    for r in sorted(runs, key=lambda r: bool(r.branch_of)):  # trunks before their branches
        by_shape.setdefault(program_key(r.cfg), []).append(r)
    groups = list(by_shape.values())
    if workers <= 1:
        return [r for g in groups for r in g]

    def cost(g):
        r = g[0]
        return counting.flops_per_token(r.cfg.model, r.cfg.train.seq_len) * estimate.run_tokens(r, 1)[0]

    groups.sort(key=cost, reverse=True)
    ordered = []
    for k in range(0, len(groups), workers):
        chunk = groups[k:k + workers]
        ordered += [g[i] for i in range(max(map(len, chunk))) for g in chunk if i < len(g)]
    return ordered


def _inline(jobs, **_):
    for i, job in enumerate(jobs):
        log.info("[%d/%d] %s", i + 1, len(jobs), ", ".join(job[1]))
        yield run_unit(*job)


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without initialising jax (CUDA_VISIBLE_DEVICES or nvidia-smi)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return []


def worker_slots(workers: int, devices_per_worker: int) -> list[dict]:
    """Environment of each worker: its own CUDA_VISIBLE_DEVICES on GPU hosts; on a CPU host its own
    share of the cores (SIMSCALE_WORKER_CPUS, applied by the worker before it starts jax)."""
    gpus = visible_gpus()
    if gpus:
        n = len(gpus) // devices_per_worker
        if n == 0:
            raise ValueError(f"--devices_per_worker={devices_per_worker} exceeds the {len(gpus)} visible "
                             "GPU(s)")
        n = min(n, workers) if workers else n
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * devices_per_worker:(i + 1) * devices_per_worker])}
                for i in range(n)]
    n = workers or 2
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []  # Linux only
    if n > len(cores):  # more workers than cores, or no affinity control: they share the host
        return [{} for _ in range(n)]
    return [{CPUS_ENV: ",".join(map(str, part))} for part in _split(cores, n)]


def _split(items: list, n: int) -> list[list]:
    """n contiguous parts of items, sizes differing by at most one."""
    q, r = divmod(len(items), n)
    bounds = [i * q + min(i, r) for i in range(n + 1)]
    return [items[bounds[i]:bounds[i + 1]] for i in range(n)]


def _describe(slot: dict) -> str:
    if "CUDA_VISIBLE_DEVICES" in slot:
        return f"GPUs {slot['CUDA_VISIBLE_DEVICES']}"
    return f"CPUs {slot[CPUS_ENV]}" if CPUS_ENV in slot else "the shared host"


def _pin(slots) -> None:
    """A worker's start: its slot's environment and cores, before it imports jax (XLA:CPU sizes its
    thread pool by the cores the process may run on)."""
    slot = slots.get()
    os.environ.update(slot)
    if slot.get(CPUS_ENV):
        os.sched_setaffinity(0, [int(c) for c in slot[CPUS_ENV].split(",")])


def _process(jobs, workers=0, devices_per_worker=1, **_):
    slots = worker_slots(workers, devices_per_worker)
    ctx = multiprocessing.get_context("spawn")  # jax is not fork-safe
    queue = ctx.Manager().Queue()
    for slot in slots:
        queue.put(slot)
    log.info("process executor: %d worker(s) on %s", len(slots), ", ".join(_describe(s) for s in slots))
    with ProcessPoolExecutor(len(slots), mp_context=ctx, initializer=_pin, initargs=(queue,)) as pool:
        futures = [pool.submit(run_unit, *job) for job in jobs]
        for job, future in zip(jobs, futures):
            yield _collect(job, future.result)


def _ray(jobs, ray_address="", devices_per_worker=1, **_):
    try:
        import ray
    except ImportError:
        raise ImportError("--executor ray needs Ray: pip install 'simscale[ray]'") from None
    if not ray.is_initialized():
        env = {"PYTHONPATH": os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)}
        ray.init(address=ray_address or None, runtime_env={"env_vars": env}, include_dashboard=False,
                 log_to_driver=True)
    resources = ray.cluster_resources()
    options = dict(num_cpus=1)
    if resources.get("GPU"):
        options["num_gpus"] = devices_per_worker
    elif resources.get("TPU"):
        options["resources"] = {"TPU": devices_per_worker}
    task = ray.remote(**options)(run_unit)
    refs = [task.remote(*job) for job in jobs]
    for job, ref in zip(jobs, refs):
        yield _collect(job, lambda: ray.get(ref))


def _collect(job, get) -> list[dict]:
    """A worker's outcomes; a worker that died (killed, out of memory) fails its runs, which resume next
    time."""
    try:
        return get()
    except Exception as e:  # noqa: BLE001 - a dead worker fails its runs, which resume next time
        log.error("run(s) %s: their worker died: %s", ", ".join(job[1]), e)
        return [dict(run_id=run_id, outcome="failed", error=f"worker died: {type(e).__name__}: {e}")
                for run_id in job[1]]
