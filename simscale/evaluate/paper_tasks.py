"""The paper's eight multiple-choice tasks, rendered as lm-evaluation-harness 0.4 defines them.

    copa sst2 qqp mrpc rte mnli piqa arc_easy    (PAPER_TASKS; the `paper` suite adds blimp_paper22)

Each task's prompt (`doc_to_text`), choices (`doc_to_choice`), gold (`doc_to_target`) and the
space before a choice (`target_delimiter`) are those of lm-eval's task YAML/utils (the files
named in `SOURCES`), on the split lm-eval scores (its test split when it has one, else its
validation split: mnli's validation_matched). The simplified filter checks the example's own text
fields (premise, sentence, question, choices written in the row), not the prompt templates.

Rows are read from `$SIMSCALE_DATA/tasks/<task>/<split>.jsonl` when that file exists (one row a
line, in the dataset's own schema, e.g. a `datasets` split's `to_json`), else through Hugging Face
`datasets.load_dataset(path, name, split=split)` with lm-eval's dataset path and name (downloaded
once, then read from the `datasets` cache).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable

from simscale.evaluate.tasks import Example, Task, read_jsonl

Rendered = tuple[str, tuple[str, ...], int, tuple[str, ...]]  # context, choices, gold, own text


def _lower_first(choice: str) -> str:
    return choice[0].lower() + choice[1:]


def _copa(row) -> Rendered:  # super_glue/copa/utils.py: the premise without its period + connector
    connector = {"cause": "because", "effect": "therefore"}[row["question"]]
    choices = (" " + _lower_first(row["choice1"]), " " + _lower_first(row["choice2"]))
    return (row["premise"].strip()[:-1] + f" {connector}", choices, row["label"],
            (row["premise"], row["choice1"], row["choice2"]))


def _sst2(row) -> Rendered:  # glue/sst2/default.yaml
    return (f"{row['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:",
            ("negative", "positive"), row["label"], (row["sentence"],))


def _qqp(row) -> Rendered:  # glue/qqp/default.yaml
    return (f"Question 1: {row['question1']}\nQuestion 2: {row['question2']}\n"
            "Question: Do both questions ask the same thing?\nAnswer:",
            ("no", "yes"), row["label"], (row["question1"], row["question2"]))


def _mrpc(row) -> Rendered:  # glue/mrpc/default.yaml
    return (f"Sentence 1: {row['sentence1']}\nSentence 2: {row['sentence2']}\n"
            "Question: Do both sentences mean the same thing?\nAnswer:",
            ("no", "yes"), row["label"], (row["sentence1"], row["sentence2"]))


def _rte(row) -> Rendered:  # glue/rte/default.yaml
    return (f"{row['sentence1']}\nQuestion: {row['sentence2']} True or False?\nAnswer:",
            ("True", "False"), row["label"], (row["sentence1"], row["sentence2"]))


def _mnli(row) -> Rendered:  # glue/mnli/utils.py: the hypothesis ends with a period
    hypothesis = row["hypothesis"].strip()
    hypothesis += "" if hypothesis.endswith(".") else "."
    return (f"{row['premise']}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:",
            ("True", "Neither", "False"), row["label"], (row["premise"], row["hypothesis"]))


def _piqa(row) -> Rendered:  # piqa/piqa.yaml
    return (f"Question: {row['goal']}\nAnswer:", (row["sol1"], row["sol2"]), row["label"],
            (row["goal"], row["sol1"], row["sol2"]))


def _arc(row) -> Rendered:  # arc/arc_easy.yaml: gold = the position of answerKey among the labels
    texts = tuple(row["choices"]["text"])
    return (f"Question: {row['question']}\nAnswer:", texts, row["choices"]["label"].index(row["answerKey"]),
            (row["question"],) + texts)


@dataclasses.dataclass(frozen=True)
class Source:
    hf_path: str  # lm-eval's dataset_path
    hf_name: str | None  # its dataset_name
    split: str  # the split lm-eval scores
    render: Callable[[dict], Rendered]
    lm_eval_yaml: str  # the task's definition, under lm_eval/tasks/


SOURCES = {
    "copa": Source("aps/super_glue", "copa", "validation", _copa, "super_glue/copa/default.yaml"),
    "sst2": Source("nyu-mll/glue", "sst2", "validation", _sst2, "glue/sst2/default.yaml"),
    "qqp": Source("nyu-mll/glue", "qqp", "validation", _qqp, "glue/qqp/default.yaml"),
    "mrpc": Source("nyu-mll/glue", "mrpc", "validation", _mrpc, "glue/mrpc/default.yaml"),
    "rte": Source("nyu-mll/glue", "rte", "validation", _rte, "glue/rte/default.yaml"),
    "mnli": Source("nyu-mll/glue", "mnli", "validation_matched", _mnli, "glue/mnli/default.yaml"),
    "piqa": Source("baber/piqa", None, "validation", _piqa, "piqa/piqa.yaml"),
    "arc_easy": Source("allenai/ai2_arc", "ARC-Easy", "test", _arc, "arc/arc_easy.yaml"),
}
PAPER_TASKS = tuple(SOURCES)


def local_file(name: str) -> pathlib.Path | None:
    """$SIMSCALE_DATA/tasks/<name>/<split>.jsonl, the offline copy of a task's split."""
    data = os.environ.get("SIMSCALE_DATA")
    return pathlib.Path(data) / "tasks" / name / f"{SOURCES[name].split}.jsonl" if data else None


def paper_task(name: str) -> Task:
    """One of PAPER_TASKS as multiple-choice examples, from the local file or `datasets`."""
    source = SOURCES[name]
    path = local_file(name)
    rows = read_jsonl(path) if path and path.is_file() else _hf_rows(name, path)
    examples = []
    for i, row in enumerate(rows):
        try:
            context, choices, gold, own_text = source.render(row)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"task {name}: row {i} does not have the schema of {source.hf_path} "
                             f"({source.hf_name or 'default'}) ({e!r})") from None
        if not 0 <= gold < len(choices):
            raise ValueError(f"task {name}: row {i} has label {gold}, not one of its {len(choices)} choices "
                             f"(an unlabelled test split?): use the {source.split} split")
        examples.append(Example(context, choices, (gold,), own_text=own_text))
    return Task(name, tuple(examples))


def _hf_rows(name: str, path: pathlib.Path | None) -> list[dict]:
    source = SOURCES[name]
    call = f"datasets.load_dataset({source.hf_path!r}, {source.hf_name!r}, split={source.split!r})"
    where = path or f"$SIMSCALE_DATA/tasks/{name}/{source.split}.jsonl"
    try:
        import datasets

        return list(datasets.load_dataset(source.hf_path, source.hf_name, split=source.split))
    # datasets raises ConnectionError, DatasetNotFoundError, FileNotFoundError, ... when offline
    except Exception as e:  # noqa: BLE001 - any failure gets the same advice
        raise FileNotFoundError(
            f"task {name}: no local file {where}, and {call} failed ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Go online once (with `pip install "
            "'simscale[hf]'`; datasets caches it), or write the split's rows there, one JSON object a "
            "line in the dataset's own schema") from None
