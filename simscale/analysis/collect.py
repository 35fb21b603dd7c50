"""Collect sweep workdirs (W/runs/<run_id>/) into one table of runs.

Reads each run's result.json, status.json, metrics.jsonl and eval.json
(docs/contracts.md). Missing, failed, malformed or NaN runs are kept out of
the fits with a warning each; they never stop the collection.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import pathlib

import numpy as np

from simscale.jsonio import read_json, read_jsonl


@dataclasses.dataclass
class RunResult:
    """One run: its size, budget, final loss, learning curve and zero-shot scores."""

    run_id: str
    workdir: str
    status: str
    variant: str | None = None  # data variant: simplified | unrestricted
    hidden: int | None = None
    layers: int | None = None
    N: float = math.nan  # total parameters
    N_nonemb: float = math.nan
    D: float = math.nan  # training tokens
    flops: dict = dataclasses.field(default_factory=dict)  # convention -> total training FLOPs
    flops_convention: str | None = None
    loss: float = math.nan  # final eval loss
    loss_stderr: float = math.nan
    wall_time_s: float = math.nan
    tokens_t: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # train-loss curve
    train_loss_t: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    eval_tokens_t: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # eval-loss curve
    eval_loss_t: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    eval_stderr_t: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # nan where unknown
    warmup_tokens: float = 0.0  # train.warmup_steps x batch_size x seq_len from config.json (0 if unknown)
    evals: list = dataclasses.field(default_factory=list)  # eval.json records

    @property
    def shape(self) -> str:
        return f"h{self.hidden}xL{self.layers}"

    @property
    def ok(self) -> bool:
        """Finished with a finite loss and known size and budget: usable for fits."""
        return self.status == "done" and all(math.isfinite(v) and v > 0 for v in (self.loss, self.N, self.D))

    def C(self, convention: str | None = None) -> float:
        """Total training FLOPs under `convention` (default: the run's own); nan if unknown."""
        value = self.flops.get(convention or self.flops_convention)
        return float(value) if value is not None else math.nan


def _read_json(path: pathlib.Path, warnings: list):
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        warnings.append(f"{path}: unreadable JSON ({e}); ignored")
        return None


def _curve(rows, key):
    pts = [(r["tokens"], r[key]) for r in rows if r.get(key) is not None and r.get("tokens") is not None]
    pts = [(float(t), float(v)) for t, v in pts if math.isfinite(float(v))]
    arr = np.array(sorted(pts), dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _stderr_curve(rows, tokens_t) -> np.ndarray:
    """eval_loss_stderr at each eval point's token count (nan where a row has none)."""
    by_tokens = {float(r["tokens"]): _f(r.get("eval_loss_stderr")) for r in rows
                 if r.get("eval_loss") is not None and r.get("tokens") is not None}
    return np.array([by_tokens.get(float(t), math.nan) for t in tokens_t], dtype=np.float64)


def _warmup_tokens(config: dict) -> float:
    """Tokens seen during the learning-rate warmup, from a run's config.json (0 when not recorded)."""
    train = config.get("train") or {}
    value = _f(train.get("warmup_steps")) * _f(train.get("batch_size")) * _f(train.get("seq_len"))
    return value if math.isfinite(value) and value > 0 else 0.0


def _f(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_run(run_dir: pathlib.Path, warnings: list) -> RunResult:
    """One run directory as a RunResult; problems become warnings and a non-'done' status.

    Data variant and shape come from result.json, else from config.json (unfinished runs).
    """
    result = _read_json(run_dir / "result.json", warnings) or {}
    status_file = _read_json(run_dir / "status.json", warnings) or {}
    status = result.get("status") or status_file.get("status") or "missing"
    flops = result.get("flops")
    # a bare total: the run's convention
    if isinstance(flops, (int, float)) and result.get("flops_convention"):
        flops = {result["flops_convention"]: flops}
    flops = {k: _f(v) for k, v in flops.items()} if isinstance(flops, dict) else {}
    rows = read_jsonl(run_dir / "metrics.jsonl")
    tokens_t, train_t = _curve(rows, "loss")
    eval_tokens_t, eval_t = _curve(rows, "eval_loss")
    evals = _read_json(run_dir / "eval.json", warnings) or []
    config = _read_json(run_dir / "config.json", warnings) or {}
    model, data = config.get("model") or {}, config.get("data") or {}
    run = RunResult(
        run_id=run_dir.name, workdir=str(run_dir.parent.parent), status=status,
        variant=result.get("variant") or data.get("variant"),
        hidden=result.get("hidden") or model.get("hidden"),
        layers=result.get("layers") or model.get("layers"),
        N=_f(result.get("params_total")), N_nonemb=_f(result.get("params_nonembedding")),
        D=_f(result.get("tokens")), flops=flops, flops_convention=result.get("flops_convention"),
        loss=_f(result.get("eval_loss")), loss_stderr=_f(result.get("eval_loss_stderr")),
        wall_time_s=_f(result.get("wall_time_s")), tokens_t=tokens_t, train_loss_t=train_t,
        eval_tokens_t=eval_tokens_t, eval_loss_t=eval_t, eval_stderr_t=_stderr_curve(rows, eval_tokens_t),
        warmup_tokens=_warmup_tokens(config), evals=evals if isinstance(evals, list) else [],
    )
    if not result:
        warnings.append(f"{run_dir}: no result.json (status {status}); left out of the fits")
    elif status != "done":
        warnings.append(f"{run_dir}: status {status}; left out of the fits")
    elif not run.ok:
        warnings.append(f"{run_dir}: non-finite or missing eval_loss/params_total/tokens; "
                        "left out of the fits")
    return run


def collect(workdirs) -> tuple[list[RunResult], list[str]]:
    """All runs of one or more workdirs, and the warnings met reading them."""
    runs, warnings = [], []
    for w in [workdirs] if isinstance(workdirs, (str, pathlib.Path)) else workdirs:
        runs_dir = pathlib.Path(w) / "runs"
        if not runs_dir.is_dir():
            raise FileNotFoundError(f"no runs/ folder in workdir {w}: pass the --workdir a sweep wrote")
        for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            runs.append(read_run(run_dir, warnings))
    return runs, warnings


def collect_baselines(folders) -> list[RunResult]:
    """Hugging Face baselines (`python -m simscale.evaluate --hf MODEL --out DIR`): each folder is such a DIR
    (baseline.json, eval.json) or holds such DIRs. A baseline is a RunResult with status 'baseline', its
    model name as run_id, its parameter counts and records, and no data variant."""
    out = []
    for folder in map(pathlib.Path, folders):
        found = [folder] if (folder / "baseline.json").is_file() else sorted(
            p.parent for p in folder.glob("*/baseline.json"))
        if not found:
            raise FileNotFoundError(f"--baselines {folder}: no baseline.json in it or its subfolders; give "
                                    "the --out folder of `simscale.evaluate --hf MODEL` (or its parent)")
        for d in found:
            info, evals = read_json(d / "baseline.json"), read_json(d / "eval.json", [])
            out.append(RunResult(run_id=info["model"], workdir=str(d), status="baseline",
                                 N=float(info["params_total"]), N_nonemb=float(info["params_nonembedding"]),
                                 evals=evals if isinstance(evals, list) else []))
    return out


def finished(runs: list[RunResult]) -> list[RunResult]:
    return [r for r in runs if r.ok]


POINT_COLUMNS = ("run_id", "variant", "hidden", "layers", "N", "N_nonemb", "D", "C", "loss")


def write_points(runs: list[RunResult], path, convention: str | None = None) -> None:
    """Finished runs as a CSV that `python -m simscale.analysis fit --csv` reads."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(POINT_COLUMNS)
        for r in finished(runs):
            w.writerow([r.run_id, r.variant, r.hidden, r.layers, r.N, r.N_nonemb, r.D, r.C(convention),
                        r.loss])


def _read_columns(path, columns: tuple[str, ...]) -> dict[str, list[str]]:
    """Raw text of `columns` of a CSV (header names matched case-insensitively)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise ValueError(f"{path} is empty: give a header row naming the columns, then one point a row")
        header = {h.strip().lower(): h for h in reader.fieldnames}
        missing = [c for c in columns if c.lower() not in header]
        if missing:
            raise ValueError(f"{path} lacks column(s) {missing}; it has {reader.fieldnames}")
        rows = list(reader)
    return {c: [r[header[c.lower()]] for r in rows] for c in columns}


def read_points(path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Numeric `columns` of a CSV (header names matched case-insensitively)."""
    return {c: np.array([_f(v) for v in vals], dtype=np.float64)
            for c, vals in _read_columns(path, columns).items()}


def valid_rows(path, cols: dict[str, np.ndarray], drop: bool = False) -> np.ndarray:
    """Mask of the CSV rows of `cols` (read_points) whose values are all finite and positive.

    A CSV without rows is refused; so is any row with an empty, non-numeric, non-finite, zero or negative
    value (ValueError naming its row numbers, the header being row 1) unless `drop`.
    """
    values = np.stack(list(cols.values()), -1)
    if not len(values):
        raise ValueError(f"{path} has a header but no rows: give one point a row")
    ok = np.all(np.isfinite(values) & (values > 0), axis=1)
    if not drop and not ok.all():
        rows = [str(i + 2) for i in np.flatnonzero(~ok)]
        shown = ", ".join(rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
        raise ValueError(f"{path}: row(s) {shown} (the header is row 1) have an empty, non-numeric, "
                         f"infinite, zero or negative value in {', '.join(cols)}: fix them, or pass "
                         "--drop_invalid")
    return ok


def read_labels(path, column: str) -> np.ndarray:
    """A text column of a CSV (e.g. run ids), as strings."""
    return np.array(_read_columns(path, (column,))[column], dtype=str)
