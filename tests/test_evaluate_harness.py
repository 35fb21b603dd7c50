"""The lm-evaluation-harness adapter, offline: a harness task defined on a local jsonl file."""
import jax
import pytest

from simscale.config import model_config
from simscale.evaluate import evaluator, tasks
from simscale.evaluate.scoring import Scorer
from simscale.model import init

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval (optional extra) is not installed")
from simscale.evaluate.harness import SimscaleLM  # noqa: E402
from conftest import harness_task  # noqa: E402
from test_evaluate import encoder  # noqa: E402,F401  (the test tokenizer fixture)



@pytest.fixture(scope="module")
def model(encoder):  # noqa: F811
    cfg = model_config()
    cfg.update(dict(vocab_size=encoder.tokenizer.get_vocab_size(), hidden=32, layers=2, heads=4, max_len=16))
    return SimscaleLM(scorer=Scorer(init(jax.random.PRNGKey(7), cfg), cfg, batch_tokens=512), encoder=encoder)


def test_harness_task_on_local_jsonl_matches_simscale(tmp_path, model, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    rows = [{"context": f"Q: is the {a} dog {b}?\nA:", "choices": ["yes", "no", "the big dog runs"],
             "gold": i % 3} for i, (a, b) in enumerate([(a, b) for a in ("big", "old", "red", "happy")
                                                       for b in ("small", "little", "old")])]
    data = harness_task(tmp_path, "simscale_toy", rows)
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model=model, tasks=["simscale_toy"],
                                  task_manager=TaskManager(include_path=str(tmp_path)),
                                  bootstrap_iters=10, log_samples=False)
    harness = out["results"]["simscale_toy"]
    ours = {r["metric"]: r
            for r in evaluator.score_tasks(model.scorer, model.encoder, [tasks.jsonl_task(data)])}
    for metric in ("acc", "acc_norm"):
        assert harness[f"{metric},none"] == pytest.approx(ours[metric]["value"])
        assert harness[f"{metric}_stderr,none"] == pytest.approx(ours[metric]["stderr"])


def test_registering_simscale_keeps_lm_evals_own_models():
    # lm-eval 0.4.13 imports its built-in models only while the registry is empty: registering
    # `simscale` first made model="hf" unknown ("Supported model names: simscale")
    from lm_eval.api.registry import get_model

    assert get_model("simscale") is SimscaleLM
    assert get_model("hf").__name__ == "HFLM"


class _Request:
    def __init__(self, *args):
        self.args = args


def test_rolling_loglikelihood_and_generation(model, encoder):  # noqa: F811
    short, long = " the dog runs .", " the big dog runs ." * 6
    ids = encoder.encode(short)
    assert model.loglikelihood_rolling([_Request(short)]) == pytest.approx(
        [model.scorer.score([([encoder.bos_id], ids)])[0][0]])  # one window: <s> then the string
    assert len(encoder.encode(long)) > 2 * model.scorer.max_len
    [total] = model.loglikelihood_rolling([_Request(long)])
    assert total < model.loglikelihood_rolling([_Request(long[:40])])[0] < 0
    with pytest.raises(NotImplementedError, match="log-likelihoods only"):
        model.generate_until([_Request("x", {})])
