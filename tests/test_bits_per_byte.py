"""Bits per byte counts the source text's bytes, not the <s> </s> markup, on the evaluated rows."""
import math

import numpy as np
import pytest

import simscale.train
from simscale.config import run_config
from simscale.data import loader, prepare, tokenizer

WORDS = "the cat sat on a mat and dog ran to big red ball".split()


@pytest.mark.parametrize("variant", ["simplified", "unrestricted"])
def test_bits_per_byte_of_a_uniform_model_by_hand(tmp_path, variant):
    """All weights 0 (init_std 0, LR 1e-30): every token costs ln V nats, so the run's eval_bpb must
    be (targets x log2 V) / (bytes of the text those targets decode to), over the rows evaluated."""
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, 40)) + "." for _ in range(60)]  # ASCII: a character is a byte
    (tmp_path / "c.txt").write_text("\n".join(docs) + "\n")
    (tmp_path / "v.txt").write_text("\n".join(WORDS))
    cfg = run_config()
    cfg.model.update(vocab_size=300, hidden=16, layers=1, heads=2, max_len=16, init_std=0.0)
    cfg.data.files.paths = str(tmp_path / "c.txt")
    cfg.data.update(source="files", vocab=str(tmp_path / "v.txt"), workers=1,
                    cache_dir=str(tmp_path / "cache"), min_span_len=8, min_validation_documents=6,
                    variant=variant)
    cfg.train.update(batch_size=4, seq_len=16, steps=1, warmup_steps=0, lr=1e-30, eval_batches=2,
                     log_every=1, eval_every=1, checkpoint_every=0)
    result = simscale.train.train(cfg, tmp_path / "run")

    data = prepare(cfg)
    tok = tokenizer.load(data.tokenizer_path)
    special = {tok.token_to_id(t) for t in tokenizer.SPECIAL_TOKENS}
    n_targets = n_bytes = 0
    for rows in loader.batches(data, cfg, "validation"):
        for row in rows:
            targets = [int(i) for i in row[1:]]
            n_targets += len(targets)
            n_bytes += len(tok.decode([i for i in targets if i not in special]).encode())
    assert result["eval_loss"] == pytest.approx(math.log(300), rel=1e-6)
    assert result["eval_bpb"] == pytest.approx(n_targets * math.log2(300) / n_bytes, rel=1e-6)
