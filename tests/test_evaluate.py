"""Zero-shot evaluation: scoring engine, metrics, task filter, tasks, run-directory caching."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import simscale.train
from simscale.config import model_config, run_config
from simscale.data import tokenizer
from simscale.evaluate import evaluator, run, tasks
from simscale.evaluate.__main__ import main
from simscale.evaluate.scoring import Scorer, TextEncoder
from simscale.evaluate.variant_filter import content_words, in_vocabulary
from simscale.evaluate.tasks import Example, Task
from simscale.model import apply, init

NOUNS = {"dog": "dogs", "cat": "cats", "bird": "birds", "boy": "boys", "girl": "girls",
         "horse": "horses", "frog": "frogs", "duck": "ducks"}
VERBS = {"runs": "run", "sleeps": "sleep", "eats": "eat", "jumps": "jump", "sings": "sing",
         "walks": "walk"}
ADJECTIVES = ["big", "small", "red", "happy", "old", "little", ""]


def sentence(noun, verb, adj, plural, agree=True):
    n = NOUNS[noun] if plural else noun
    v = VERBS[verb] if plural == agree else verb
    return " ".join(w for w in ["the", adj, n, v, "."] if w)


def grammatical(rng, n):
    return [sentence(rng.choice(list(NOUNS)), rng.choice(list(VERBS)), rng.choice(ADJECTIVES),
                     bool(rng.integers(2))) for _ in range(n)]


@pytest.fixture(scope="module")
def encoder():
    """The project's byte-level BPE trained on the test sentences (plus some MC words)."""
    corpus = grammatical(np.random.default_rng(1), 2000) + ["A: Q: yes no maybe why how what"]
    return TextEncoder(tokenizer.train(corpus, vocab_size=320, min_frequency=1))


def tiny_cfg(vocab_size, max_len=32):
    cfg = model_config()
    cfg.update(dict(vocab_size=vocab_size, hidden=32, layers=2, heads=4, max_len=max_len))
    return cfg


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run directory of the project's train(): a tiny model on grammatical sentences."""
    root = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(2)
    docs = [" ".join(grammatical(rng, 20)) for _ in range(600)]
    (root / "corpus.txt").write_text("\n".join(docs) + "\n")
    (root / "words.txt").write_text("\n".join(sorted({w for d in docs for w in d.split()})) + "\n")
    cfg = run_config()
    cfg.model.update(dict(vocab_size=320, hidden=32, layers=2, heads=4, max_len=32))
    cfg.data.files.update(dict(paths=str(root / "corpus.txt"), format="text"))
    cfg.data.update(dict(source="files", workers=1,
                         vocab=str(root / "words.txt"), cache_dir=str(root / "cache"), min_span_len=8,
                         min_validation_documents=10))
    cfg.train.update(dict(batch_size=32, seq_len=32, steps=300, warmup_steps=20, lr=3e-3,
                          log_every=100, eval_every=1000, checkpoint_every=1000))
    simscale.train.train(cfg, root / "run")
    return root / "run"


def test_scores_equal_direct_full_sequence_computation():
    cfg = tiny_cfg(97, max_len=16)
    params = init(jax.random.PRNGKey(1), cfg)
    rng = np.random.default_rng(0)
    # a few distinct lengths (each costs a compile), including one longer than the window
    requests = [(list(rng.integers(0, 97, n_context)), list(rng.integers(0, 97, n_continuation)))
                for n_context in (1, 20) for n_continuation in (1, 3) for _ in range(3)]
    requests.append(([5], [int(jnp.argmax(apply(params, jnp.array([[5]]), cfg)[0, 0]))]))
    scores = Scorer(params, cfg, batch_tokens=64).score(requests)
    forward = jax.jit(lambda x: jax.nn.log_softmax(apply(params, x, cfg)))
    for (context, continuation), (logprob, greedy) in zip(requests, scores):
        whole = (context + continuation)[-(cfg.max_len + 1):]  # left truncation to the window
        logp = np.asarray(forward(jnp.array([whole[:-1]])))[0]
        start = len(whole) - 1 - len(continuation)
        picked = [logp[start + j, whole[start + j + 1]] for j in range(len(continuation))]
        assert logprob == pytest.approx(float(sum(picked)), abs=1e-4)
        assert greedy == all(int(np.argmax(logp[start + j])) == whole[start + j + 1]
                             for j in range(len(continuation)))
    assert scores[-1][1]  # the model's own greedy token is greedy


def test_left_truncation_keeps_the_last_window():
    cfg = tiny_cfg(97, max_len=8)
    scorer = Scorer(init(jax.random.PRNGKey(2), cfg), cfg, min_len=8)
    long = list(range(1, 30))
    assert scorer.window(long, [40, 41]) == (long[-7:] + [40, 41], 2)
    a, b = scorer.score([(long, [40, 41]), (long[-7:], [40, 41])])
    assert a == b  # everything before the window is ignored
    with pytest.raises(ValueError, match="max_len"):
        scorer.window([1], list(range(9)))


def test_encode_pair_moves_trailing_space_to_continuation(encoder):
    context, continuation = encoder.encode_pair("the dog ", "runs")
    assert context == [encoder.bos_id] + encoder.encode(" the dog")  # read as "<s> the dog"
    assert encoder.encode(" the dog runs") == context[1:] + continuation
    assert encoder.encode_pair("", " the dog") == ([encoder.bos_id], encoder.encode(" the dog"))


def test_acc_and_acc_norm_follow_lm_eval_definitions():
    # lm-eval: acc = argmax(lls) == gold; acc_norm = argmax(lls / len(choice)) == gold (characters,
    # delimiter excluded). Here lls/len = -2.5, -1.0, -0.75: acc picks 0, acc_norm picks 2.
    ex = Example("Q", ("ab", "abcdef", "abcdefghijkl"), (2,))
    assert evaluator.choice_metrics([-5.0, -6.0, -9.0], ex) == {"acc": 0.0, "acc_norm": 1.0}
    ex = Example("Q", ("ab", "abcdef", "abcdefghijkl"), (0, 1))  # several correct choices
    assert evaluator.choice_metrics([-5.0, -6.0, -9.0], ex) == {"acc": 1.0, "acc_norm": 0.0}
    value, stderr = evaluator.mean_stderr([1, 0, 1, 1])
    assert (value, stderr) == (0.75, pytest.approx(0.5 / 2))  # sample std (ddof=1) / sqrt(n)


def test_ties_share_the_hit_instead_of_going_to_the_first_choice():
    ex = Example("Q", ("ab", "cd", "ef"), (0,))
    assert evaluator.choice_metrics([-2.0, -2.0, -5.0], ex) == {"acc": 0.5, "acc_norm": 0.5}
    assert evaluator.choice_metrics([-2.0, -2.0, -2.0], Example("Q", ("ab", "cd", "ef"), (0, 2))) == {
        "acc": pytest.approx(2 / 3), "acc_norm": pytest.approx(2 / 3)}
    assert evaluator.choice_metrics([-3.0, -2.0, -2.0], ex) == {"acc": 0.0, "acc_norm": 0.0}


def test_constant_logits_score_exactly_chance_on_pairs_and_multiple_choice(encoder):
    """Every choice below has the same number of tokens and characters, so a model whose logits
    are constant gives them equal log-likelihoods: the honest score is chance (1/2, 1/4), where
    np.argmax's first-choice rule scored 1.0 because the gold choice is listed first."""
    words = ["dog", "boy", "big", "old", "red"]  # single tokens of three characters in this encoder
    assert all(len(encoder.encode(" " + w)) == 1 for w in words)
    cfg = tiny_cfg(encoder.tokenizer.get_vocab_size())
    cfg.init_std = 0.0  # all weights zero: logits 0 for every token
    scorer = Scorer(init(jax.random.PRNGKey(0), cfg), cfg)
    pairs = tuple(Example("", (f"the {a} runs .", f"the {b} runs ."), (0,))
                  for a in words for b in words if a != b)
    four = tuple(Example("Q:", tuple(f" {w}" for w in words[i:] + words[:i])[:4], (0,)) for i in range(5))
    tasks_ = [Task("pairs", pairs, metrics=("acc",)), Task("four", four)]
    records = {(r["task"], r["metric"]): r["value"] for r in evaluator.score_tasks(scorer, encoder, tasks_)}
    assert records == {("pairs", "acc"): 0.5, ("four", "acc"): 0.25, ("four", "acc_norm"): 0.25}


def test_simplified_filter_keeps_and_drops_crafted_examples():
    vocab = frozenset("the dog is big didnt go i its a ball".split())
    assert content_words("The dog of Mary's isn't 3 big.") == ["the", "dog", "of", "isnt", "big"]
    assert content_words("The dog does n't go , it 's big") == ["the", "dog", "does", "go", "it", "big"]
    assert in_vocabulary(["The dog is big!", "It's a ball."], vocab | {"it"})  # first word lower-cased
    assert in_vocabulary(["The dog Rex didn't go 42 times"], vocab | {"times"})  # name, digits skipped
    assert in_vocabulary(["i did n't go"], vocab | {"did"})  # pre-tokenised contraction fragment
    assert not in_vocabulary(["The cat is big"], vocab)
    assert not in_vocabulary(["the dog", "the dog is enormous"], vocab)  # every text must pass
    assert not in_vocabulary(["Dogs go"], vocab)  # the first word is not a name
    task = Task("t", (Example("", ("the dog", "dog the"), (0,)), Example("", ("the cat", "cat"), (0,))))
    assert evaluator.variants(task, vocab)["simplified"] == [task.examples[0]]


def test_trained_model_prefers_grammatical_minimal_pairs(trained_run):
    params, cfg = simscale.train.load_params(trained_run)
    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(100):
        args = rng.choice(list(NOUNS)), rng.choice(list(VERBS)), rng.choice(ADJECTIVES), bool(rng.integers(2))
        pairs.append(Example("", (sentence(*args), sentence(*args, agree=False)), (0,)))
    task = Task("pairs", tuple(pairs), metrics=("acc",))
    encoder = TextEncoder.from_file(trained_run / "tokenizer.json")
    [record] = evaluator.score_tasks(Scorer(params, cfg.model), encoder, [task])
    assert record["value"] > 0.9 and record["n"] == 100 and record["chance"] == 0.5


def test_random_model_is_at_chance_on_a_large_multiple_choice_set(encoder):
    cfg = tiny_cfg(encoder.tokenizer.get_vocab_size())
    rng = np.random.default_rng(4)
    words = ["yes", "no", "dog", "cat", "runs", "big", "maybe", "the", "bird", "old"]
    examples = tuple(Example(f"Q: {' '.join(rng.choice(words, 5))}\nA:",
                             tuple(" ".join(rng.choice(words, rng.integers(1, 4))) for _ in range(4)),
                             (int(rng.integers(4)),)) for _ in range(1500))
    too_long = Example("Q: what?\nA:", ("yes", " ".join(["dog"] * 40)), (0,))  # > max_len tokens
    scorer = Scorer(init(jax.random.PRNGKey(5), cfg), cfg, batch_tokens=4096)
    records = evaluator.score_tasks(scorer, encoder, [Task("mc", examples + (too_long,))])
    assert {r["metric"] for r in records} == {"acc", "acc_norm"}
    for r in records:
        assert r["chance"] == 0.25 and abs(r["value"] - 0.25) < 3 * r["stderr"], r
        assert (r["n"], r["skipped"]) == (1500, 1)
    assert scorer.tokens_per_s > 0


def test_bigbench_task_json_becomes_multiple_choice(monkeypatch):
    task_json = {"name": "toy", "example_input_prefix": "\nQuestion: ", "examples": [
        {"input": "Is a dog an animal?", "target_scores": {"yes": 1, "no": 0}},
        {"input": "Pick the small ones.", "target_scores": {"ant": 1, "mouse": 1, "whale": 0}},
        {"input": "free text", "target": "no choices here"},
    ]}
    task = tasks.bigbench_task("toy", task_json)
    assert task.name == "bigbench/toy" and len(task.examples) == 2
    first = task.examples[0]
    assert (first.context, first.choices, first.gold) == ("Question: Is a dog an animal?\nA:", ("yes", "no"),
                                                          (0,))
    assert first.texts == ("Is a dog an animal?", "yes", "no")  # the filter skips templates
    assert task.examples[1].gold == (0, 1) and task.examples[1].chance == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no multiple-choice"):
        tasks.bigbench_task("gen", {"examples": [{"input": "x", "target": "y"}]})
    # a task with subtasks (like cause_and_effect) stands for all of them, grouped under its name
    files = {"toy": {"name": "toy"}, "toy/a": task_json, "toy/b": task_json}
    monkeypatch.setattr("simscale.data.bigbench.read_task", lambda name: files[name])
    monkeypatch.setattr("simscale.data.bigbench.list_tasks", lambda: sorted(files))
    subtasks = tasks.resolve("bigbench/toy")
    assert [(t.name, t.group) for t in subtasks] == [("bigbench/toy/a", "toy"), ("bigbench/toy/b", "toy")]
    with pytest.raises(ValueError, match="pre-training"):
        tasks.resolve("bigbench/topical_chat")


def test_jsonl_task_and_its_errors(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"context": "Q: sky?\\nA:", "choices": ["blue", "green"], "gold": 0}\n'
                    '{"context": "x", "choices": ["a", "b", "c"], "gold": [1, 2]}\n')
    [task] = tasks.resolve(f"jsonl:{path}")
    assert task.name == "jsonl/mine" and task.examples[1] == Example("x", ("a", "b", "c"), (1, 2))
    path.write_text('{"context": "x", "choices": ["a"], "gold": 0}\n')
    with pytest.raises(ValueError, match="line 1"):
        tasks.jsonl_task(path)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.resolve("glue")


@pytest.mark.parametrize("empty", ["", "  "])
def test_jsonl_task_refuses_an_empty_choice(tmp_path, empty):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"context": "Q: sky?", "choices": ["blue", "green"], "gold": 0}\n'
                    + json.dumps({"context": "Q: sea?", "choices": ["blue", empty], "gold": 0}) + "\n")
    with pytest.raises(ValueError) as e:
        tasks.jsonl_task(path)
    assert str(e.value) == f"{path} line 2: choice 1 is empty: give every choice some text (acc_norm " \
                           "divides a choice's log-likelihood by its length)"


def test_fewshot_draws_deterministic_demonstrations_from_a_held_out_pool():
    examples = [Example(f"q{i}", (f"a{i}", "z"), (0,)) for i in range(20)]
    shot = evaluator.with_shots(examples, 2, " ")
    assert len(shot) == 16 and shot == evaluator.with_shots(examples, 2, " ")
    pool_contexts = {e.context for e in examples} - {s.context.split("\n\n")[-1] for s in shot}
    for ex in shot:
        *demos, own = ex.context.split("\n\n")
        assert len(demos) == 2 and all(d.split(" ")[0] in pool_contexts for d in demos)
        assert all(d == f"{d.split(' ')[0]} a{d.split(' ')[0][1:]}" for d in demos)  # gold answers
    assert evaluator.with_shots(examples[:2], 2, " ") == []


def test_aggregate_leaves_flagged_tasks_out():
    def rec(task, group, value, n):
        return dict(task=task, variant="simplified", metric="acc", value=value, stderr=0.1, n=n, chance=0.5,
                    suite="s", shots=0, flagged=n < evaluator.MIN_EXAMPLES, group=group, skipped=0)

    rows = [rec("a", "syntax", 0.8, 100), rec("b", "syntax", 0.6, 100), rec("c", "morphology", 0.0, 10)]
    by_task = {r["task"]: r for r in evaluator.aggregate(rows, "s")}
    assert by_task["s"]["value"] == pytest.approx(0.7) and by_task["s"]["excluded"] == ["c"]
    assert by_task["s"]["stderr"] == pytest.approx(math.sqrt(0.02) / 2) and by_task["s"]["n"] == 200
    assert by_task["s/syntax"]["value"] == pytest.approx(0.7)
    assert by_task["s/morphology"]["flagged"] and by_task["s/morphology"]["value"] is None
    only_syntax = evaluator.aggregate(rows[:2], "s")
    assert [r["task"] for r in only_syntax] == ["s"]  # a group that is the whole suite adds nothing


def test_a_suite_of_blimp_and_multiple_choice_tasks_averages_each_metric_over_the_tasks_reporting_it():
    def rec(task, group, metric, value):
        return dict(task=task, variant="standard", metric=metric, value=value, stderr=0.1, n=100, chance=0.5,
                    suite="paper", shots=0, flagged=False, group=group, skipped=0)

    rows = [rec("blimp/a", "syntax", "acc", 0.9), rec("copa", "", "acc", 0.5),
            rec("copa", "", "acc_norm", 0.6)]
    got = {(r["task"], r["metric"]): r["value"] for r in evaluator.aggregate(rows, "paper")}
    assert got == {("paper", "acc"): pytest.approx(0.7), ("paper", "acc_norm"): pytest.approx(0.6),
                   ("paper/syntax", "acc"): pytest.approx(0.9)}


def test_evaluate_run_writes_and_caches_eval_json(tmp_path, trained_run, monkeypatch):
    (tmp_path / "pairs.jsonl").write_text("".join(
        json.dumps({"context": "", "choices": [sentence(n, v, a, False), sentence(n, v, a, False, False)],
                    "gold": 0}) + "\n"
        for n in ("dog", "cat", "bird") for v in ("runs", "eats") for a in ("big", "old", "tall")))
    loads, load_checkpoint = [], simscale.train.checkpoint.load_checkpoint
    monkeypatch.setattr("simscale.train.checkpoint.load_checkpoint",
                        lambda d: loads.append(d) or load_checkpoint(d))
    spec = f"jsonl:{tmp_path / 'pairs.jsonl'}"
    records = run.evaluate_run(trained_run, spec)
    assert loads == [trained_run]
    by_key = {(r["variant"], r["metric"]): r for r in records}
    assert by_key["standard", "acc"]["n"] == 18 and by_key["standard", "acc"]["value"] > 0.9
    assert by_key["simplified", "acc"]["n"] == 12  # "tall" is not in the run's vocab.txt
    assert by_key["simplified", "acc"]["flagged"] and all(r["suite"] == spec for r in records)
    assert {r["step"] for r in records} == {300}  # the checkpoint scored: the run's final step
    assert json.loads((trained_run / "eval.json").read_text()) == records
    assert run.evaluate_run(trained_run, spec) == records and len(loads) == 1  # cached
    assert main(["--run", str(trained_run), "--tasks", spec]) == 0 and len(loads) == 1
    run.evaluate_run(trained_run, spec, shots=1)  # another shot count is another evaluation
    assert len(loads) == 2 and {r["shots"] for r in run.read_records(trained_run / "eval.json")} == {0, 1}
    # without vocab.txt the config's data.vocab (the same word list here) defines the simplified variant
    (trained_run / "vocab.txt").unlink()
    records = run.evaluate_run(trained_run, spec, out=tmp_path / "other.json")
    assert [r["n"] for r in records if r["variant"] == "simplified"] == [12, 12]  # acc, acc_norm


def pairs_task(path):
    path.write_text("".join(json.dumps({"context": "", "choices": [sentence(n, "runs", "big", False),
                                                                   sentence(n, "runs", "big", False, False)],
                                        "gold": 0}) + "\n" for n in ("dog", "cat")))
    return f"jsonl:{path}"


def test_an_earlier_checkpoint_is_scored_only_when_asked_and_labelled(tmp_path, trained_run, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "eval.json").unlink(missing_ok=True)
    ckpts = run_dir / "checkpoints"
    shutil.copytree(ckpts / "300", ckpts / "100")  # an earlier checkpoint: same weights, step 100
    meta = ckpts / "100" / "meta" / "metadata"
    meta.write_text(json.dumps(dict(json.loads(meta.read_text()), step=100)))
    for f in (ckpts / "300").rglob("*"):
        if f.is_file():
            f.write_bytes(b"corrupt")
    spec = pairs_task(tmp_path / "pairs.jsonl")
    with pytest.warns(UserWarning, match="checkpoints/300 is unreadable"):
        with pytest.raises(ValueError,
                           match="newest readable checkpoint is step 100, not the run's final step 300"):
            run.evaluate_run(run_dir, spec)
    assert not (run_dir / "eval.json").exists()
    with pytest.warns(UserWarning) as caught:
        assert main(["--run", str(run_dir), "--tasks", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--allow_earlier_step" in err
    assert all("\n" not in str(w.message) for w in caught)  # the fallback warning is one line
    with pytest.warns(UserWarning, match="unreadable"):
        records = run.evaluate_run(run_dir, spec, allow_earlier_step=True)
    assert records and {r["step"] for r in records} == {100}


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path), "--tasks", "blimp/none", "--blimp", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: BLiMP paradigm 'none'") and err.count("\n") == 1
    assert main(["--run", str(tmp_path), "--tasks", "blimp_paper22", "--blimp", str(tmp_path / "x")]) == 2
    assert "BLiMP folder" in capsys.readouterr().err


def test_blimp_paper22_counts_after_simplification(shared_data, capsys):
    assert main(["counts", "--vocab", str(shared_data / "vocab" / "AOChildes_word_frequency.csv"),
                 "--blimp", str(shared_data / "blimp")]) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert len([k for k in lines if k.startswith("blimp/")]) == 22
    assert lines["blimp/adjunct_island"] == ["1000", "626"]
    assert lines["blimp/expletive_it_object_raising"] == ["1000", "101"]
    assert lines["total"] == ["22000", "8690"]


def test_blimp_loader_reads_all_67_paradigms(shared_data):
    names = tasks.blimp_paradigms(shared_data / "blimp")
    assert len(names) == 67 and set(tasks.BLIMP_PAPER22) <= set(names)
    task = tasks.blimp_paradigm("anaphor_gender_agreement", shared_data / "blimp")
    assert len(task.examples) == 1000 and task.group == "morphology" and task.metrics == ("acc",)


def test_subsample_is_fixed_ordered_and_bounded():
    task = tasks.Task("t", tuple(tasks.Example(str(i), ("a", "b"), (0,)) for i in range(50)))
    small = tasks.subsample(task, 10)
    assert [int(e.context) for e in small.examples] == sorted(int(e.context) for e in small.examples)
    assert len(small.examples) == 10 and small == tasks.subsample(task, 10)
    assert tasks.subsample(task, 0) is task and tasks.subsample(task, 80) is task
