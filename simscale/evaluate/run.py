"""Evaluate a finished run: load its parameters and tokenizer, score task suites, cache eval.json.

    records = evaluate_run(run_dir, ["blimp_paper22", "bigbench_mc"], shots=0)

A suite already present in the output file for the same number of shots is not
evaluated again; the file is rewritten atomically after every suite, so an
interrupted evaluation keeps what it finished.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Sequence

from simscale.data.vocab import load_vocabulary
from simscale.evaluate import tasks as tasks_lib
from simscale.evaluate.evaluator import evaluate_suite
from simscale.evaluate.scoring import Scorer, TextEncoder
from simscale.jsonio import read_json, write_json
from simscale.train import checkpoint

log = logging.getLogger(__name__)


def read_records(path) -> list[dict]:
    records = read_json(path, [])
    if not isinstance(records, list):
        raise ValueError(f"{path} should hold a list of result records")
    return records


def evaluate_run(run_dir, tasks: Sequence[str] | str, shots: int = 0, out=None,
                 vocab: frozenset[str] | None = None, blimp=None, batch_tokens: int = 8192,
                 max_examples: int = 0, allow_earlier_step: bool = False) -> list[dict]:
    """Evaluate `tasks` (names, see simscale.evaluate.tasks) for the run in `run_dir`.

    The simplified variants use `vocab`, else the run's vocab.txt, else the vocabulary its
    config names (data.vocab), so that an unrestricted run is scored on the same simplified
    examples. `max_examples` > 0 scores a fixed-seed subsample of each task (standard
    variant; the simplified one is filtered from it). Returns every record in the output
    file (default RUN_DIR/eval.json). Each record carries the checkpoint `step` it scored; a step
    other than the run's final one (result.json `steps`: the newest checkpoint is unreadable, or
    the run is unfinished) is refused unless `allow_earlier_step`.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist: give a run's folder (a sweep's "
                                "W/runs/<run_id>, or simscale.train's --workdir)")
    specs = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not specs:
        raise ValueError("no tasks to evaluate: name some, e.g. blimp_paper22,bigbench_mc")
    out = pathlib.Path(out) if out else run_dir / "eval.json"
    records = read_records(out)
    final_step = checkpoint.final_step(run_dir)
    # a suite scored on an earlier checkpoint (records without a step predate the field) is scored again
    done = {(r.get("suite"), r.get("shots"), r.get("max_examples", 0)) for r in records
            if r.get("step", final_step) == final_step}
    todo = [s for s in specs if (s, shots, max_examples) not in done]
    if not todo:
        log.info("%s: %s already evaluated", out, ", ".join(specs))
        return records
    suites = {s: [tasks_lib.subsample(t, max_examples) for t in tasks_lib.resolve(s, blimp)]
              for s in todo}  # fail on bad names before loading
    tokenizer_path = run_dir / "tokenizer.json"
    if not tokenizer_path.exists():
        raise FileNotFoundError(f"{tokenizer_path} not found: text tasks need a run trained on "
                                "real data (a synthetic-data run has no tokenizer)")
    encoder = TextEncoder.from_file(tokenizer_path)
    params, cfg, step = checkpoint.load_final_checkpoint(run_dir, allow_earlier_step)
    if vocab is None:
        vocab = _run_vocabulary(run_dir, cfg)
    scorer = Scorer(params, cfg.model, batch_tokens=batch_tokens)
    for spec, suite_tasks in suites.items():
        records = [r for r in records if (r.get("suite"), r.get("shots"), r.get("max_examples", 0))
                   != (spec, shots, max_examples)]  # an earlier-step scoring of this suite is replaced
        records += [dict(r, max_examples=max_examples, step=step)
                    for r in evaluate_suite(scorer, encoder, spec, suite_tasks, vocab, shots)]
        write_json(out, records, allow_nan=False)
        log.info("%s: %s done (%.0f tokens/s)", out, spec, scorer.tokens_per_s)
    return records


def _run_vocabulary(run_dir: pathlib.Path, cfg) -> frozenset[str] | None:
    spec = run_dir / "vocab.txt" if (run_dir / "vocab.txt").exists() else cfg.data.get("vocab")
    if not spec:
        log.warning("%s names no vocabulary: reporting standard variants only", run_dir)
        return None
    return load_vocabulary(spec).words
