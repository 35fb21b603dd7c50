"""Evaluation tasks as multiple-choice examples: BLiMP, BIG-bench, and users' jsonl files.

Every task is a list of `Example(context, choices, gold)`; a choice is scored as
the continuation `delimiter + choice` of the context (lm-eval's
`target_delimiter`, a space). Minimal pairs are two-choice examples with an
empty context and the good sentence first (lm-eval's BLiMP).

Task names (comma-separated on the command line):
  blimp                 all 67 BLiMP paradigms       blimp/<paradigm>  one paradigm
  blimp_paper22         the paper's 22 paradigms
  copa, sst2, qqp, mrpc, rte, mnli, piqa, arc_easy   the paper's tasks as lm-eval defines them
  paper                 those eight + blimp_paper22 (paper_tasks.py)
  bigbench_mc           BIG-bench multiple-choice tasks (BIGBENCH_MC)
  bigbench/<task>       one BIG-bench task (a multiple-choice task.json)
  jsonl:<path>          a user task: one {"context", "choices", "gold"} object a line
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from simscale.evaluate import blimp_files

BLIMP_PAPER22 = (
    "anaphor_gender_agreement", "anaphor_number_agreement",
    "ellipsis_n_bar_1", "ellipsis_n_bar_2",
    "irregular_past_participle_adjectives", "irregular_past_participle_verbs",
    "existential_there_quantifiers_1", "existential_there_quantifiers_2",
    "existential_there_object_raising", "existential_there_subject_raising",
    "superlative_quantifiers_1", "superlative_quantifiers_2",
    "expletive_it_object_raising", "tough_vs_raising_1",
    "distractor_agreement_relative_clause",
    "irregular_plural_subject_verb_agreement_1", "irregular_plural_subject_verb_agreement_2",
    "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2",
    "adjunct_island", "complex_NP_island", "principle_A_reconstruction",
)

# Multiple-choice BIG-bench tasks in the spirit of the paper's COPA, SST-2, PIQA, ...
# (a task with subtasks stands for all of them).
BIGBENCH_MC = (
    "cause_and_effect", "strategyqa", "social_iqa", "goal_step_wikihow",
    "implicatures", "hyperbaton",
)
BIGBENCH_MAX_EXAMPLES = 2000  # larger tasks (hyperbaton: 50,000) are subsampled with a fixed seed


@dataclasses.dataclass(frozen=True)
class Example:
    context: str
    choices: tuple[str, ...]
    gold: tuple[int, ...]  # indices of the correct choices
    own_text: tuple[str, ...] = ()  # the example's words without templates; () = context + choices

    @property
    def chance(self) -> float:
        return len(self.gold) / len(self.choices)

    @property
    def texts(self) -> tuple[str, ...]:
        """What the simplified-variant filter checks."""
        return self.own_text or (self.context,) + self.choices


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    examples: tuple[Example, ...]
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    group: str = ""  # BLiMP field (syntax, morphology, ...): results are also averaged per group
    delimiter: str = " "


def blimp_dir(path=None) -> pathlib.Path:
    """The folder of BLiMP's 67 jsonl files: `path`, else $SIMSCALE_DATA/blimp, else the cache's copy,
    downloaded once (blimp_files.py)."""
    if path is None:
        return blimp_files.folder()
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"BLiMP folder {path} does not exist")
    return path


def blimp_paradigm(name: str, directory=None) -> Task:
    """One BLiMP paradigm as two-choice examples (good sentence first)."""
    path = blimp_dir(directory) / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"BLiMP paradigm {name!r}: no file {path}")
    rows = read_jsonl(path)
    examples = tuple(Example("", (r["sentence_good"], r["sentence_bad"]), (0,)) for r in rows)
    return Task(f"blimp/{name}", examples, metrics=("acc",), group=rows[0]["field"])


def blimp_paradigms(directory=None) -> list[str]:
    return sorted(p.stem for p in blimp_dir(directory).glob("*.jsonl"))


def bigbench_task(name: str, task_json: dict, group: str = "") -> Task:
    """A BIG-bench multiple-choice task.json as examples: context = task prefix + example input
    prefix + input + example output prefix (BIG-bench's defaults "\\nQ: ", "\\nA: "), without
    the choices listed; gold = the choices of top score. The simplified filter checks the input
    and the choices, not the templates."""
    examples = []
    before = task_json.get("task_prefix", "") + task_json.get("example_input_prefix", "\nQ: ")
    after = task_json.get("example_output_prefix", "\nA: ")
    for ex in task_json.get("examples", []):
        scores = ex.get("target_scores")
        if not scores:
            continue
        choices = tuple(scores)
        top = max(scores.values())
        examples.append(Example((before + ex["input"] + after).strip(), choices,
                                tuple(i for i, c in enumerate(choices) if scores[c] == top),
                                own_text=(ex["input"],) + choices))
    if not examples:
        raise ValueError(f"BIG-bench task {name!r} has no multiple-choice examples (target_scores)")
    return subsample(Task(f"bigbench/{name}", tuple(examples), group=group), BIGBENCH_MAX_EXAMPLES)


def subsample(task: Task, n: int, seed: int = 0) -> Task:
    """At most `n` of the task's examples (0: all), drawn with a fixed seed, in their order."""
    if not n or len(task.examples) <= n:
        return task
    keep = np.random.default_rng(seed).choice(len(task.examples), n, replace=False)
    return dataclasses.replace(task, examples=tuple(task.examples[i] for i in sorted(keep)))


def jsonl_task(path) -> Task:
    """A user task: lines {"context": str, "choices": [str, ...], "gold": int or [int, ...]}."""
    path = pathlib.Path(path)
    examples = []
    for i, row in enumerate(read_jsonl(path), 1):
        try:
            gold = row["gold"] if isinstance(row["gold"], list) else [row["gold"]]
            choices = tuple(str(c) for c in row["choices"])
            ex = Example(str(row["context"]), choices, tuple(int(g) for g in gold))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} line {i}: need context, choices, gold ({e!r})") from None
        if len(choices) < 2 or not all(0 <= g < len(choices) for g in ex.gold):
            raise ValueError(f"{path} line {i}: need >= 2 choices and gold indices among them")
        empty = [k for k, c in enumerate(choices) if not c.strip()]
        if empty:
            raise ValueError(f"{path} line {i}: choice {empty[0]} is empty: give every choice some text "
                             "(acc_norm divides a choice's log-likelihood by its length)")
        examples.append(ex)
    return Task(f"jsonl/{path.stem}", tuple(examples))


def resolve(spec: str, blimp=None) -> list[Task]:
    """The tasks one name stands for (see the module docstring)."""
    if spec == "blimp":
        return [blimp_paradigm(p, blimp) for p in blimp_paradigms(blimp)]
    if spec == "blimp_paper22":
        return [blimp_paradigm(p, blimp) for p in BLIMP_PAPER22]
    if spec.startswith("blimp/"):
        return [blimp_paradigm(spec.split("/", 1)[1], blimp)]
    if spec == "bigbench_mc":
        return [t for name in BIGBENCH_MC for t in _bigbench(name)]
    if spec.startswith("bigbench/"):
        return _bigbench(spec.split("/", 1)[1])
    if spec.startswith("jsonl:"):
        return [jsonl_task(spec.split(":", 1)[1])]
    from simscale.evaluate import paper_tasks

    if spec in paper_tasks.PAPER_TASKS:
        return [paper_tasks.paper_task(spec)]
    if spec == "paper":
        return [paper_tasks.paper_task(t) for t in paper_tasks.PAPER_TASKS] + resolve("blimp_paper22", blimp)
    raise ValueError(f"unknown task {spec!r}: use blimp, blimp_paper22, blimp/<paradigm>, "
                     f"bigbench_mc, bigbench/<task>, jsonl:<path>, paper or one of its tasks "
                     f"{','.join(paper_tasks.PAPER_TASKS)}")


def _bigbench(name: str) -> list[Task]:
    """A BIG-bench task, or its subtasks (grouped under its name) when it has some."""
    from simscale.data import bigbench

    if name.split("/")[0] in bigbench.PRETRAINING_TASKS:
        raise ValueError(f"BIG-bench task {name!r} is pre-training text, not an evaluation task")
    task_json = bigbench.read_task(name)
    subtasks = ([] if task_json.get("examples")
                else [t for t in bigbench.list_tasks() if t.startswith(name + "/")])
    if subtasks:
        return [bigbench_task(t, bigbench.read_task(t), group=name) for t in subtasks]
    return [bigbench_task(name, task_json)]


def read_jsonl(path: pathlib.Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {i} is not JSON: {e}") from None
    if not rows:
        raise ValueError(f"task file {path} holds no examples")
    return rows
