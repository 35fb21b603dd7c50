"""Export to Hugging Face: a trained text run as a transformers directory with simscale's logits and tokens."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

import simscale.train
from simscale import export
from simscale.config import run_config
from simscale.data import tokenizer
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
    cfg.data.update(dict(source="files", files=str(root / "corpus.txt"), format="text", workers=1,
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
    ours = tokenizer.load(text_run / "tokenizer.json")
    text = "the big dog sees a small cat ."
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text).ids
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id) == (ours.token_to_id("<s>"), ours.token_to_id("</s>"))
    params, cfg = load_params(text_run)
    tokens = np.array([[ours.token_to_id("<s>")] + ours.encode(text).ids])
    with torch.no_grad():
        hf_logits = model(input_ids=torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(hf_logits, np.asarray(apply(params, jnp.asarray(tokens), cfg.model)), atol=1e-4)
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
