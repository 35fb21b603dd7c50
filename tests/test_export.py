"""Export to Hugging Face: a trained text run as a transformers directory with simscale's logits and
tokens."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

import simscale.train
from conftest import harness_task
from simscale import export
from simscale.config import run_config
from simscale.evaluate.scoring import TextEncoder
from simscale.model import apply
from simscale.train.checkpoint import load_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = "the a dog cat bird sees likes runs sleeps big small red happy and".split()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A finished run of the project's train() on text: a tiny GQA model, 20 steps."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, 40)) + " ." for _ in range(300)]
    (root / "corpus.txt").write_text("\n".join(docs) + "\n")
    (root / "words.txt").write_text("\n".join(WORDS) + "\n")
    cfg = run_config()
    cfg.model.update(dict(vocab_size=300, hidden=32, layers=2, heads=4, kv_heads=2, max_len=32))
    cfg.data.files.update(dict(paths=str(root / "corpus.txt"), format="text"))
    cfg.data.update(dict(source="files", workers=1,
                         vocab=str(root / "words.txt"), cache_dir=str(root / "cache"), min_span_len=8,
                         min_validation_documents=10))
    cfg.train.update(dict(batch_size=16, seq_len=32, steps=20, warmup_steps=5, lr=3e-3, log_every=10,
                          eval_every=1000, checkpoint_every=1000))
    simscale.train.train(cfg, root / "run")
    return root / "run"


def test_exported_model_gives_simscales_logits_and_tokens(text_run, tmp_path):
    out = tmp_path / "hf"
    assert export.main(["--run", str(text_run), "--out", str(out)]) == 0
    model = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = TextEncoder.from_file(text_run / "tokenizer.json")
    text = "the big dog sees a small cat ."
    context, continuation = ours.encode_pair("the big dog sees", " a small cat .")  # as the scorer reads it
    assert hf_tok(text)["input_ids"] == context + continuation == [ours.bos_id] + ours.encode(" " + text)
    assert hf_tok.eos_token_id == ours.tokenizer.token_to_id("</s>")
    params, cfg = load_params(text_run)
    tokens = np.array([context + continuation])
    with torch.no_grad():
        hf_logits = model(input_ids=torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(hf_logits, np.asarray(apply(params, jnp.asarray(tokens), cfg.model)),
                               atol=1e-4)
    assert json.loads((out / "simscale.json").read_text())["step"] == 20


def test_export_refuses_what_it_cannot_export_in_one_line(text_run, tmp_path, capsys):
    assert export.main(["--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: --run ")
    (tmp_path / "file").write_text("x")
    assert export.main(["--run", str(text_run), "--out", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"  # the run as it was before its final step: result.json says 30
    unfinished.mkdir()
    for name in ("config.json", "tokenizer.json", "checkpoints"):
        (unfinished / name).symlink_to(text_run / name)
    (unfinished / "result.json").write_text(json.dumps({"steps": 30}))
    assert export.main(["--run", str(unfinished), "--out", str(tmp_path / "o")]) == 2
    assert "not the run's final step 30" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert export.main(["--run", str(unfinished), "--out", str(tmp_path / "o"), "--allow_earlier_step"]) == 0




def test_lm_eval_scores_the_export_as_simscale_scores_the_run(text_run, tmp_path, monkeypatch):
    """lm-eval's own `hf` model on the exported directory, a local multiple-choice task: the same
    acc and acc_norm as simscale's evaluator on the run."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval (optional extra) is not installed")
    pytest.importorskip("accelerate", reason="lm-eval's hf model needs accelerate (the lmeval extra)")
    from lm_eval.tasks import TaskManager

    from simscale.evaluate import evaluator, tasks
    from simscale.evaluate.scoring import Scorer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    out = tmp_path / "hf"
    assert export.main(["--run", str(text_run), "--out", str(out)]) == 0
    rng = np.random.default_rng(3)
    rows = [{"context": f"the {a} dog sees", "choices": ["a cat .", "the bird", "runs and sleeps ."],
             "gold": int(rng.integers(3))} for a in ("big", "small", "red", "happy") for _ in range(3)]
    data = harness_task(tmp_path, "export_toy", rows)
    evaluated = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={out},dtype=float32,device=cpu",
                                        tasks=["export_toy"],
                                        task_manager=TaskManager(include_path=str(tmp_path)),
                                        bootstrap_iters=10, log_samples=True)
    params, cfg = load_params(text_run)
    scorer, encoder = Scorer(params, cfg.model), TextEncoder.from_file(text_run / "tokenizer.json")
    # every choice's log-likelihood (the continuation is lm-eval's target_delimiter, a space, then the
    # choice), lm-eval's through the export against simscale's scorer on the run
    samples = sorted(evaluated["samples"]["export_toy"], key=lambda sample: sample["doc_id"])
    theirs = [resp[0][0] for sample in samples for resp in sample["resps"]]
    mine = [logprob for logprob, _ in scorer.score([encoder.encode_pair(r["context"], " " + c)
                                                    for r in rows for c in r["choices"]])]
    np.testing.assert_allclose(theirs, mine, atol=1e-3)
    ours = {r["metric"]: r for r in evaluator.score_tasks(scorer, encoder, [tasks.jsonl_task(data)])}
    for metric in ("acc", "acc_norm"):
        assert evaluated["results"]["export_toy"][f"{metric},none"] == pytest.approx(ours[metric]["value"])
