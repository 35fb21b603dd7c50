"""Scores tasks with a model and turns the log-likelihoods into result records.

A record is `{task, variant, metric, value, stderr, n, chance, suite, shots,
flagged, group, skipped}`: `variant` is `standard` or `simplified` (examples whose
words are all in the run's vocabulary, see variant_filter.py); `flagged` marks a
variant with fewer than MIN_EXAMPLES examples, which is reported but left out of
the averages over a suite's tasks (and over each BLiMP field), whose records
list it in `excluded`; `skipped` counts examples too long for the model.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import AbstractSet, Sequence

import numpy as np

from simscale.evaluate.scoring import Scorer, TextEncoder
from simscale.evaluate.variant_filter import in_vocabulary
from simscale.evaluate.tasks import Example, Task

log = logging.getLogger(__name__)

MIN_EXAMPLES = 50
FEWSHOT_SEED = 1234


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n)), as lm-eval reports."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def tie_aware_hit(scores: np.ndarray, gold: Sequence[int]) -> float:
    """1 if the best-scoring choice is gold; with k choices tied for the best, the gold share of them.

    np.argmax takes the first of tied choices, and BLiMP lists the good sentence first, so a model
    that scores every choice alike would score 100% there; here it scores chance.
    """
    top = np.flatnonzero(scores == scores.max())
    return float(np.isin(top, list(gold)).sum() / len(top))


def choice_metrics(lls: Sequence[float], example: Example) -> dict[str, float]:
    """lm-eval's multiple-choice metrics, ties shared (tie_aware_hit): acc = the best log-likelihood
    is gold; acc_norm = the same after dividing by each choice's length in characters (without the
    delimiter)."""
    lls = np.asarray(lls, dtype=np.float64)
    lengths = np.array([float(len(c)) for c in example.choices])
    return {"acc": tie_aware_hit(lls, example.gold), "acc_norm": tie_aware_hit(lls / lengths, example.gold)}


def with_shots(examples: Sequence[Example], shots: int, delimiter: str) -> list[Example]:
    """k-shot examples: a fixed, seeded fifth of the examples (at least k) is the pool the
    demonstrations come from and is not evaluated; each evaluated example draws its own k."""
    if shots == 0:
        return list(examples)
    order = np.random.default_rng(FEWSHOT_SEED).permutation(len(examples))
    n_pool = max(shots, len(examples) // 5)
    if n_pool >= len(examples):
        return []  # too few examples: reported with n = 0 and flagged
    pool = [examples[i] for i in order[:n_pool]]
    out = []
    for i in sorted(order[n_pool:]):
        picks = np.random.default_rng([FEWSHOT_SEED, int(i)]).choice(n_pool, shots, replace=False)
        demos = [pool[p].context + delimiter + pool[p].choices[pool[p].gold[0]] for p in picks]
        ex = examples[i]
        out.append(dataclasses.replace(ex, context="\n\n".join(demos + [ex.context])))
    return out


def variants(task: Task, vocab: AbstractSet[str] | None) -> dict[str, list[Example]]:
    """standard: every example; simplified (when a vocabulary is given): those in the vocabulary."""
    out = {"standard": list(task.examples)}
    if vocab is not None:
        out["simplified"] = [ex for ex in task.examples if in_vocabulary(ex.texts, vocab)]
    return out


def score_tasks(scorer: Scorer, encoder: TextEncoder, tasks: Sequence[Task], vocab=None,
                shots: int = 0, suite: str = "") -> list[dict]:
    """Records of each task, variant and metric. All requests go to the scorer in one call (full
    batches), and requests shared between variants or tasks are scored once. An example with a
    choice longer than the model's context window cannot be scored: it is left out and counted
    in the record's `skipped`."""
    sets = [{v: with_shots(exs, shots, t.delimiter) for v, exs in variants(t, vocab).items()} for t in tasks]
    requests = sorted({(ex.context, t.delimiter + c) for t, by_variant in zip(tasks, sets)
                       for exs in by_variant.values() for ex in exs for c in ex.choices})
    encoded = {r: encoder.encode_pair(*r) for r in requests}
    fits = [r for r in requests if len(encoded[r][1]) <= scorer.max_len]
    scores = scorer.score([encoded[r] for r in fits], desc=suite or tasks[0].name)
    lls = {r: ll for r, (ll, _) in zip(fits, scores)}
    records = []
    for task, by_variant in zip(tasks, sets):
        for variant, all_exs in by_variant.items():
            exs = [ex for ex in all_exs if all((ex.context, task.delimiter + c) in lls for c in ex.choices)]
            if len(exs) < len(all_exs):
                log.warning("%s (%s): %d examples have a choice longer than the context window "
                            "(model.max_len=%d) and are skipped", task.name, variant,
                            len(all_exs) - len(exs), scorer.max_len)
            per_example = [choice_metrics([lls[ex.context, task.delimiter + c] for c in ex.choices], ex)
                           for ex in exs]
            chance = float(np.mean([ex.chance for ex in exs])) if exs else math.nan
            for metric in task.metrics:
                value, stderr = mean_stderr([m[metric] for m in per_example])
                records.append(_record(task=task.name, variant=variant, metric=metric, value=value,
                                       stderr=stderr, n=len(exs), chance=chance, suite=suite,
                                       shots=shots, flagged=len(exs) < MIN_EXAMPLES, group=task.group,
                                       skipped=len(all_exs) - len(exs)))
    return records


def _record(**fields) -> dict:
    """A result record; values that do not exist (NaN: no examples) become None (JSON null)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in fields.items()}


def aggregate(records: Sequence[dict], name: str) -> list[dict]:
    """Macro averages over tasks (unflagged ones) per variant and metric: the suite as `name`,
    and each group (BLiMP field, BIG-bench task of subtasks) as `name/group` unless the group
    is the whole suite."""
    out = []
    groups = [[r for r in records if r["group"] == g] for g in sorted({r["group"] for r in records})]
    for label, members in [(name, records)] + [
            (f"{name}/{rows[0]['group']}", rows) for rows in groups
            if rows[0]["group"] and len(rows) < len(records)]:
        # the metrics its members report (the `paper` suite: BLiMP fields have acc only)
        for variant, metric in sorted({(r["variant"], r["metric"]) for r in members}):
            rows = [r for r in members if (r["variant"], r["metric"]) == (variant, metric)]
            used = [r for r in rows if not r["flagged"]]
            k = len(used)
            out.append(_record(
                task=label, variant=variant, metric=metric,
                value=float(np.mean([r["value"] for r in used])) if k else math.nan,
                stderr=math.sqrt(sum(r["stderr"] ** 2 for r in used)) / k if k else math.nan,
                n=sum(r["n"] for r in used),
                chance=float(np.mean([r["chance"] for r in used])) if k else math.nan,
                suite=rows[0]["suite"], shots=rows[0]["shots"], flagged=k == 0, group="",
                skipped=sum(r["skipped"] for r in used), excluded=[r["task"] for r in rows if r["flagged"]]))
    return out


def evaluate_suite(scorer: Scorer, encoder: TextEncoder, suite: str, tasks: Sequence[Task],
                   vocab=None, shots: int = 0) -> list[dict]:
    """Records of a suite's tasks, plus its averages when it has several tasks."""
    records = score_tasks(scorer, encoder, tasks, vocab, shots, suite)
    return records + (aggregate(records, suite) if len(tasks) > 1 else [])
