"""Baselines: a Hugging Face causal LM scored by `simscale.evaluate --hf` on the same tasks and records."""
import json

import numpy as np
import pytest

from simscale.evaluate.__main__ import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = "the a dog cat bird sees likes runs sleeps big small red happy and zebra .".split()
HIDDEN, LAYERS, INTERMEDIATE = 32, 2, 64


def save_tiny_model(folder, architecture):
    """A randomly initialised causal LM with a byte-level BPE trained on a few sentences, saved as a
    transformers directory: GPT-NeoX (Pythia: <|endoftext|>, no BOS added) or OPT (`</s>` first)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    special = "<|endoftext|>" if architecture == "gpt_neox" else "</s>"
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(WORDS, 12)) for _ in range(200)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[special],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(sentences, trainer)
    if architecture == "opt":
        bpe.post_processor = processors.TemplateProcessing(single=f"{special} $A",
                                                           special_tokens=[(special, 0)])
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=special, eos_token=special)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    if architecture == "gpt_neox":
        config = transformers.GPTNeoXConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                            num_attention_heads=4, intermediate_size=INTERMEDIATE,
                                            max_position_embeddings=64, initializer_range=0.3)
        transformers.GPTNeoXForCausalLM(config).save_pretrained(folder)
    else:
        config = transformers.OPTConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                        num_attention_heads=4, ffn_dim=INTERMEDIATE,
                                        word_embed_proj_dim=HIDDEN, max_position_embeddings=64, init_std=0.3,
                                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
        transformers.OPTForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_pythia(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("pythia"), "gpt_neox")


def toy_rows(seed=3):
    """Multiple choice on the toy words; the examples mentioning 'zebra' are not in the vocabulary."""
    rng = np.random.default_rng(seed)
    animals = ["dog", "cat", "bird", "zebra"]
    return [{"context": f"the {a} {b} sees", "choices": ["a cat .", "the big bird", f"the {c} and sleeps ."],
             "gold": int(rng.integers(3))}
            for a in ("big", "small", "red") for b in animals for c in animals[:3]]


def by_hand(model, tok, rows):
    """Each example's choice log-likelihoods as lm-eval defines them, straight from the transformers
    model: the continuation ' ' + choice is what encode(context + continuation) adds after encode(context);
    its tokens' log-softmax summed, the model reading context and continuation in one full sequence."""
    out = []
    for row in rows:
        lls = []
        for choice in row["choices"]:
            context = tok(row["context"])["input_ids"]
            continuation = tok(row["context"] + " " + choice)["input_ids"][len(context):]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([context + continuation])).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            lls.append(sum(float(logp[len(context) - 1 + i, t]) for i, t in enumerate(continuation)))
        out.append(lls)
    return np.array(out)


def accuracy(lls, rows, normalise=False):
    lengths = np.array([[len(c) for c in r["choices"]] for r in rows], float)
    picks = np.argmax(lls / lengths if normalise else lls, axis=1)
    return float(np.mean(picks == np.array([r["gold"] for r in rows])))


def test_hf_model_scores_as_its_own_logits_say_in_the_same_records(tiny_pythia, tmp_path, capsys):
    rows = toy_rows()
    task = tmp_path / "toy.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vocab = tmp_path / "words.txt"
    vocab.write_text("\n".join(w for w in WORDS if w not in ("zebra", ".")) + "\n")
    out = tmp_path / "baseline"
    assert main(["--hf", str(tiny_pythia), "--tasks", f"jsonl:{task}", "--out", str(out),
                 "--vocab", str(vocab)]) == 0
    records = {(r["variant"], r["metric"]): r for r in json.loads((out / "eval.json").read_text())}
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_pythia).float().eval()
    tok = transformers.AutoTokenizer.from_pretrained(tiny_pythia)
    lls = by_hand(model, tok, rows)
    simple = [i for i, r in enumerate(rows) if "zebra" not in json.dumps(r)]
    assert 0 < len(simple) < len(rows)
    for variant, idx in (("standard", range(len(rows))), ("simplified", simple)):
        sub = [rows[i] for i in idx]
        for metric, normalise in (("acc", False), ("acc_norm", True)):
            r = records[variant, metric]
            assert (r["n"], r["model"], r["shots"]) == (len(sub), str(tiny_pythia), 0)
            assert r["value"] == pytest.approx(accuracy(lls[list(idx)], sub, normalise))
            assert r["chance"] == pytest.approx(1 / 3)
    D, L, V = HIDDEN, LAYERS, len(tok)
    per_layer = 2 * 2 * D + (3 * D * D + 3 * D) + (D * D + D) + (D * INTERMEDIATE + INTERMEDIATE) + (
        INTERMEDIATE * D + D)  # two layer norms, fused QKV, output projection, MLP (all with biases)
    info = json.loads((out / "baseline.json").read_text())
    assert info["params_nonembedding"] == L * per_layer + 2 * D  # + the final layer norm
    assert info["params_total"] == info["params_nonembedding"] + 2 * V * D  # untied embed_in, embed_out
    assert info["max_len"] == 64
    assert "toy" in capsys.readouterr().out
    mtime = (out / "eval.json").stat().st_mtime_ns  # scored suites are not scored again
    assert main(["--hf", str(tiny_pythia), "--tasks", f"jsonl:{task}", "--out", str(out),
                 "--vocab", str(vocab)]) == 0
    assert (out / "eval.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("architecture", ["gpt_neox", "opt"])
def test_hf_scorer_matches_lm_evals_own_hf_model(architecture, tmp_path, monkeypatch):
    """lm-eval's `hf` model on the same local task gives the same log-likelihood and greedy flag for every
    choice, for a tokenizer without (GPT-NeoX) and with (OPT) a BOS token of its own."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval (optional extra) is not installed")
    pytest.importorskip("accelerate", reason="lm-eval's hf model needs accelerate (the lmeval extra)")
    from conftest import harness_task
    from lm_eval.tasks import TaskManager

    from simscale.evaluate import hf_model

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    empty_context = {"context": "", "choices": ["the dog runs .", "dog the runs ."], "gold": 0}  # as BLiMP
    rows = toy_rows(seed=4)[:12] + [empty_context]
    harness_task(tmp_path, "hf_toy", rows)
    tiny = save_tiny_model(tmp_path / architecture, architecture)
    evaluated = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tiny},dtype=float32,device=cpu", tasks=["hf_toy"],
        task_manager=TaskManager(include_path=str(tmp_path)), bootstrap_iters=10, log_samples=True)
    samples = sorted(evaluated["samples"]["hf_toy"], key=lambda sample: sample["doc_id"])
    theirs = [resp[0] for sample in samples for resp in sample["resps"]]
    scorer, encoder, _ = hf_model.load(str(tiny), batch_tokens=256)
    requests = [encoder.encode_pair(r["context"], " " + c) for r in rows for c in r["choices"]]
    assert (requests[0][0][0] == 0) == (architecture == "opt")  # OPT's contexts start with its BOS
    mine = scorer.score(requests)
    np.testing.assert_allclose([ll for ll, _ in mine], [ll for ll, _ in theirs], rtol=1e-5, atol=1e-4)
    assert [greedy for _, greedy in mine] == [bool(greedy) for _, greedy in theirs]


def test_hf_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = tmp_path / "toy.jsonl"
    task.write_text(json.dumps(toy_rows()[0]) + "\n")
    assert main(["--hf", str(tmp_path / "no" / "model"), "--tasks", f"jsonl:{task}", "--out",
                 str(tmp_path / "o"), "--vocab", "wordfreq:100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --hf {tmp_path / 'no' / 'model'}: cannot load")
    with pytest.raises(SystemExit):
        main(["--hf", "m", "--tasks", "jsonl:x"])  # --hf needs --out
    assert "--hf needs --out DIR" in capsys.readouterr().err
