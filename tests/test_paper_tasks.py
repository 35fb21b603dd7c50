"""The paper's eight tasks: local rows in each dataset's schema, rendered and scored as lm-eval does."""
import json
import pathlib

import jax
import pytest

from simscale.config import model_config
from simscale.evaluate import evaluator, paper_tasks, tasks
from simscale.evaluate.__main__ import main
from simscale.evaluate.scoring import Scorer
from simscale.model import init

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval (optional extra) is not installed")
from simscale.evaluate.harness import SimscaleLM  # noqa: E402
from test_evaluate import encoder  # noqa: E402,F401  (the test tokenizer fixture)

# A few rows of each task's scored split, in the dataset's own schema (field names and types as
# Hugging Face `datasets` gives them). The first row of each uses only the words of SIMPLE.
ROWS = {
    "copa": [
        {"premise": "The dog was happy.", "choice1": "The boy gave it a ball.",
         "choice2": "The boy took its bone.", "question": "cause", "idx": 0, "label": 0},
        {"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
         "choice2": "He got a hole in his sock.", "question": "cause", "idx": 1, "label": 0},
        {"premise": "I tipped the bottle. ", "choice1": "The liquid in the bottle froze.",
         "choice2": "The liquid in the bottle poured out.", "question": "effect", "idx": 2, "label": 1},
    ],
    "sst2": [
        {"sentence": "it is a good and happy movie . ", "label": 1, "idx": 0},
        {"sentence": "unflinchingly bleak and desperate ", "label": 0, "idx": 1},
        {"sentence": "a gorgeous , witty , seductive movie . ", "label": 1, "idx": 2},
    ],
    "qqp": [
        {"question1": "Is the dog happy?", "question2": "Is the dog sad?", "label": 0, "idx": 0},
        {"question1": "How do I learn Python quickly?",
         "question2": "What is the fastest way to learn Python programming?", "label": 1, "idx": 1},
    ],
    "mrpc": [
        {"sentence1": "The boy gave the dog a ball.", "sentence2": "The dog got a ball from the boy.",
         "label": 1, "idx": 0},
        {"sentence1": "Amrozi accused his brother , whom he called \" the witness \" , of deliberately "
                      "distorting his evidence .",
         "sentence2": "Referring to him as only \" the witness \" , Amrozi accused his brother of "
                      "deliberately distorting his evidence .", "label": 1, "idx": 1},
    ],
    "rte": [
        {"sentence1": "The dog is in the house.", "sentence2": "The dog is in the car.", "label": 1,
         "idx": 0},
        {"sentence1": "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at "
                      "age 44, according to the Christopher Reeve Foundation.",
         "sentence2": "Christopher Reeve had an accident.", "label": 1, "idx": 1},
    ],
    "mnli": [
        {"premise": "The boy is in the house.", "hypothesis": "The boy is in the house", "label": 0,
         "idx": 0},
        {"premise": "The new rights are nice enough", "hypothesis": "Everyone really likes the newest "
                                                                    "benefits ", "label": 1, "idx": 1},
        {"premise": "This site includes a list of all award winners.",
         "hypothesis": "The Government Executive articles housed on the website are not able to be "
                       "searched.", "label": 2, "idx": 2},
    ],
    "piqa": [
        {"goal": "How do I make the dog happy?", "sol1": "Give the dog a ball.",
         "sol2": "Give the dog a car.", "label": 0},
        {"goal": "When boiling butter, when it's ready, you can",
         "sol1": "Pour it onto a plate", "sol2": "Pour it into a jar", "label": 1},
    ],
    "arc_easy": [
        {"id": "Mercury_1", "question": "What does a dog eat?",
         "choices": {"text": ["food", "rocks", "cars", "water"], "label": ["A", "B", "C", "D"]},
         "answerKey": "A"},
        {"id": "Mercury_2", "question": "Which factor will most likely cause a person to develop a fever?",
         "choices": {"text": ["a leg muscle relaxing after exercise", "a bacterial population in the "
                              "bloodstream", "several viral particles on the skin",
                              "carbohydrates being digested in the stomach"],
                     "label": ["1", "2", "3", "4"]},
         "answerKey": "2"},
    ],
}
# The words of each task's first row (its own fields, not the prompt templates).
SIMPLE = ("the dog was happy boy gave it a ball took its bone is and good movie sad in house car "
          "from got how do i make give what does eat food rocks cars water").split()


def write_rows(root: pathlib.Path) -> pathlib.Path:
    """root/tasks/<task>/<split>.jsonl for each of the eight tasks; returns root."""
    for name, rows in ROWS.items():
        path = root / "tasks" / name / f"{paper_tasks.SOURCES[name].split}.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def lm_eval_tasks(data, tmp_path_factory):
    """lm-eval's own task definitions of the eight tasks (its YAML and utils, `include`d), on the same
    rows: `simscale_<task>` for each."""
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    yaml_root = pathlib.Path(lm_eval.__file__).parent / "tasks"
    for name, source in paper_tasks.SOURCES.items():
        split = "test" if name == "arc_easy" else "validation"  # the split lm-eval's YAML scores
        rows = data / "tasks" / name / f"{source.split}.jsonl"
        (folder / f"simscale_{name}.yaml").write_text(
            f"include: {yaml_root / source.lm_eval_yaml}\ntask: simscale_{name}\ntag: []\n"
            "dataset_path: json\ndataset_name: null\ntraining_split: null\n"
            + ("validation_split: null\n" if split == "test" else "")
            + f"dataset_kwargs:\n  data_files:\n    {source.split}: {rows}\n")
    return TaskManager(include_path=str(folder))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def model(encoder):  # noqa: F811
    cfg = model_config()
    cfg.update(dict(vocab_size=encoder.tokenizer.get_vocab_size(), hidden=32, layers=2, heads=4, max_len=64))
    scorer = Scorer(init(jax.random.PRNGKey(3), cfg), cfg, batch_tokens=2048)
    return SimscaleLM(scorer=scorer, encoder=encoder)


def test_each_task_asks_lm_eval_s_requests_with_its_gold(data, lm_eval_tasks, offline, monkeypatch):
    monkeypatch.setenv("SIMSCALE_DATA", str(data))
    harness = lm_eval_tasks.load([f"simscale_{n}" for n in paper_tasks.PAPER_TASKS])["tasks"]
    for name in paper_tasks.PAPER_TASKS:
        (ours,) = tasks.resolve(name)
        theirs = harness[f"simscale_{name}"]
        theirs.build_all_requests(rank=0, world_size=1)
        docs = list(theirs.eval_docs)
        assert len(ours.examples) == len(docs) == len(ROWS[name])
        for i, (ex, doc) in enumerate(zip(ours.examples, docs)):
            requests = [r.arguments for r in theirs.instances if r.doc_id == i]
            assert [(ex.context, ours.delimiter + c) for c in ex.choices] == requests, name
            choices = theirs.doc_to_choice(doc)
            target = theirs.doc_to_target(doc)
            assert list(ex.choices) == choices  # acc_norm divides by these lengths
            assert ex.gold == ((choices.index(target) if isinstance(target, str) else target),), name


def test_online_rows_come_from_the_dataset_and_split_lm_eval_names(data, tmp_path, monkeypatch):
    """Without a local file, rows come from datasets.load_dataset with the dataset path, name and split
    of lm-eval's YAML (read here with PyYAML); the datasets call itself is replaced by one that
    returns the same rows as the local files, so the examples must be equal."""
    import datasets
    import yaml

    class Loader(yaml.SafeLoader):  # lm-eval's `!function utils.f` tags read as plain strings
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    yaml_root = pathlib.Path(lm_eval.__file__).parent / "tasks"
    asked = []

    def load_dataset(path, name, split):
        asked.append((path, name, split))
        return ROWS[next(task for task, s in paper_tasks.SOURCES.items()
                         if (s.hf_path, s.hf_name, s.split) == (path, name, split))]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    for name, source in paper_tasks.SOURCES.items():
        config = yaml.load((yaml_root / source.lm_eval_yaml).read_text(), Loader=Loader)
        split = config.get("test_split") or config["validation_split"]  # what lm-eval scores
        monkeypatch.setenv("SIMSCALE_DATA", str(tmp_path))
        online = tasks.resolve(name)[0]
        assert asked[-1] == (config["dataset_path"], config.get("dataset_name"), split), name
        monkeypatch.setenv("SIMSCALE_DATA", str(data))
        assert online == tasks.resolve(name)[0]
        assert len(asked) == list(paper_tasks.SOURCES).index(name) + 1  # the local file: no call


def test_scores_equal_lm_eval_s_own_evaluation_of_the_same_rows(data, lm_eval_tasks, model, offline,
                                                                 monkeypatch):
    monkeypatch.setenv("SIMSCALE_DATA", str(data))
    names = ["copa", "mnli", "arc_easy"]  # two, three and four choices; one prompt function each
    out = lm_eval.simple_evaluate(model=model, tasks=[f"simscale_{n}" for n in names],
                                  task_manager=lm_eval_tasks, bootstrap_iters=0, log_samples=False)
    records = evaluator.score_tasks(model.scorer, model.encoder, [tasks.resolve(n)[0] for n in names])
    for name in names:
        ours = {r["metric"]: r["value"] for r in records if r["task"] == name}
        theirs = out["results"][f"simscale_{name}"]
        assert ours["acc"] == pytest.approx(theirs["acc,none"])
        if "acc_norm,none" in theirs:
            assert ours["acc_norm"] == pytest.approx(theirs["acc_norm,none"])


def test_simplified_variants_keep_the_rows_whose_own_words_are_all_in_the_vocabulary(data, tmp_path,
                                                                                    monkeypatch, capsys):
    monkeypatch.setenv("SIMSCALE_DATA", str(data))
    (tmp_path / "simple.txt").write_text("\n".join(SIMPLE))
    assert main(["counts", "--vocab", str(tmp_path / "simple.txt"),
                 "--tasks", ",".join(paper_tasks.PAPER_TASKS)]) == 0
    lines = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()}
    # by hand: only each task's first row is in SIMPLE (piqa's "I", capitalised and not first, is a name)
    assert {n: lines[n] for n in paper_tasks.PAPER_TASKS} == {n: [str(len(r)), "1"] for n, r in ROWS.items()}
    assert lines["total"] == [str(sum(map(len, ROWS.values()))), "8"]


def test_records_of_the_paper_tasks_hold_both_variants(data, model, monkeypatch):
    monkeypatch.setenv("SIMSCALE_DATA", str(data))
    records = evaluator.evaluate_suite(model.scorer, model.encoder, "eight",
                                       [tasks.resolve(n)[0] for n in paper_tasks.PAPER_TASKS], set(SIMPLE))
    copa = {(r["variant"], r["metric"]): r for r in records if r["task"] == "copa"}
    assert set(copa) == {(v, m) for v in ("standard", "simplified") for m in ("acc", "acc_norm")}
    assert (copa["standard", "acc"]["n"], copa["simplified", "acc"]["n"]) == (3, 1)
    assert copa["standard", "acc"]["chance"] == 0.5 and copa["standard", "acc"]["stderr"] is not None
    arc = [r for r in records if r["task"] == "arc_easy" and r["variant"] == "standard"]
    assert {r["chance"] for r in arc} == {0.25}
    assert any(r["task"] == "eight" for r in records)  # the suite's average


def test_a_task_neither_local_nor_loadable_says_where_to_put_it(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("SIMSCALE_DATA", str(tmp_path))
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    with pytest.raises(FileNotFoundError, match=r"task mnli: no local file .*tasks/mnli/validation_matched"
                                                r"\.jsonl, and datasets\.load_dataset\('nyu-mll/glue', "
                                                r"'mnli', split='validation_matched'\) failed"):
        tasks.resolve("mnli")
    bad = tmp_path / "tasks" / "rte" / "validation.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": 0}) + "\n")
    with pytest.raises(ValueError, match="task rte: row 0 does not have the schema of nyu-mll/glue"):
        tasks.resolve("rte")


def test_the_paper_suite_is_the_eight_tasks_and_blimp_paper22(data, shared_data, monkeypatch):
    monkeypatch.setenv("SIMSCALE_DATA", str(data))
    names = [t.name for t in tasks.resolve("paper", shared_data / "blimp")]
    assert names == list(paper_tasks.PAPER_TASKS) + [f"blimp/{p}" for p in tasks.BLIMP_PAPER22]
