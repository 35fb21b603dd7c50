"""Evaluate a finished run (or a Hugging Face baseline): load the model and tokenizer, score task
suites, cache eval.json.

    records = evaluate_run(run_dir, ["blimp_paper22", "bigbench_mc"], shots=0)
    records = evaluate_hf("EleutherAI/pythia-70m", "blimp_paper22", "baselines/pythia-70m")

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
    final_step = checkpoint.final_step(run_dir)

    def load():
        tokenizer_path = run_dir / "tokenizer.json"
        if not tokenizer_path.exists():
            raise FileNotFoundError(f"{tokenizer_path} not found: text tasks need a run trained on "
                                    "real data (a synthetic-data run has no tokenizer)")
        encoder = TextEncoder.from_file(tokenizer_path)
        params, cfg, step = checkpoint.load_final_checkpoint(run_dir, allow_earlier_step)
        scorer = Scorer(params, cfg.model, batch_tokens=batch_tokens)
        return scorer, encoder, vocab if vocab is not None else _run_vocabulary(run_dir, cfg), {"step": step}

    # a suite scored on an earlier checkpoint (records without a step predate the field) is scored again
    out = pathlib.Path(out) if out else run_dir / "eval.json"
    return score_suites(out, tasks, shots, max_examples, blimp,
                        lambda r: r.get("step", final_step) == final_step, load)


def evaluate_hf(model: str, tasks: Sequence[str] | str, out_dir, shots: int = 0,
                vocab: frozenset[str] | None = None, blimp=None, batch_tokens: int | None = None,
                max_examples: int = 0) -> list[dict]:
    """Evaluate a Hugging Face causal LM (a hub name or a local directory; hf_model.py) as a baseline:
    the same tasks, variants and records as a run, each record naming the `model`, in
    OUT_DIR/eval.json, and OUT_DIR/baseline.json with the model's name, parameter counts and window
    (what `analysis report --baselines` reads)."""
    from simscale.evaluate import hf_model

    out_dir = pathlib.Path(out_dir)

    def load():
        scorer, encoder, info = hf_model.load(model, batch_tokens or hf_model.BATCH_TOKENS)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "baseline.json", info)
        return scorer, encoder, vocab, {"model": model}

    return score_suites(out_dir / "eval.json", tasks, shots, max_examples, blimp,
                        lambda r: r.get("model") == model, load)


def score_suites(out: pathlib.Path, tasks: Sequence[str] | str, shots: int, max_examples: int, blimp,
                 current, load) -> list[dict]:
    """Score the suites of `tasks` that the records file `out` lacks for this model into it, and return
    all its records. current(record): the record was scored by this model (and checkpoint); load() ->
    (scorer, encoder, vocabulary or None, fields every new record carries), called only when a suite
    is to be scored, after every task name has resolved."""
    specs = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not specs:
        raise ValueError("no tasks to evaluate: name some, e.g. blimp_paper22,bigbench_mc")
    records = read_records(out)
    done = {(r.get("suite"), r.get("shots"), r.get("max_examples", 0)) for r in records if current(r)}
    todo = [s for s in specs if (s, shots, max_examples) not in done]
    if not todo:
        log.info("%s: %s already evaluated", out, ", ".join(specs))
        return records
    suites = {s: [tasks_lib.subsample(t, max_examples) for t in tasks_lib.resolve(s, blimp)]
              for s in todo}  # fail on bad names before loading
    scorer, encoder, vocab, stamp = load()
    for spec, suite_tasks in suites.items():
        records = [r for r in records if (r.get("suite"), r.get("shots"), r.get("max_examples", 0))
                   != (spec, shots, max_examples)]  # an earlier scoring of this suite is replaced
        records += [dict(r, max_examples=max_examples, **stamp)
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
