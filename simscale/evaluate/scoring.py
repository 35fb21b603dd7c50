"""Batched, jit-compiled log-likelihood scoring of continuations, as lm-evaluation-harness does it.

    encoder = TextEncoder.from_file(run_dir / "tokenizer.json")
    scorer = Scorer(params, cfg.model)
    [(logprob, is_greedy), ...] = scorer.score([encoder.encode_pair(ctx, cont), ...])

A request is a pair of token lists (context, continuation). The model sees
context + continuation truncated on the left to its context window
(`model.max_len`), and the result is the summed log-probability of the
continuation tokens and whether each of them is the argmax prediction.
Requests are bucketed by length into a few padded shapes (powers of two up to
the window, each batch holding about `batch_tokens` tokens), so only a handful
of shapes ever compile.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from simscale.model import apply
from simscale.model.loss import cross_entropy

log = logging.getLogger(__name__)

Request = tuple[Sequence[int], Sequence[int]]


class TextEncoder:
    """A run's tokenizer with lm-eval's context/continuation split, contexts read as documents.

    Training rows hold documents as `<s> text </s>`, so the first word after <s> carries a
    leading space (byte-level BPE: "Ġword"). A context is therefore `<s>` followed by the
    context text with a leading space (like SentencePiece's dummy prefix in LLaMA's
    tokenizer); an empty context is `<s>` alone and the continuation brings its own space.
    """

    def __init__(self, tokenizer, bos_token: str = "<s>"):
        self.tokenizer = tokenizer
        self.bos_id = tokenizer.token_to_id(bos_token)
        if self.bos_id is None:
            raise ValueError(f"the tokenizer has no {bos_token!r} token to start contexts with")

    @classmethod
    def from_file(cls, path) -> "TextEncoder":
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for missing/bad files
            raise FileNotFoundError(f"cannot read tokenizer {path}: {e}") from None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split: trailing context whitespace moves to the continuation; the
        continuation's tokens are those of encode(context + continuation) after encode(context)."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        if context and not context[0].isspace():
            context = " " + context
        context_ids = self.encode(context)
        continuation_ids = self.encode(context + continuation)[len(context_ids):]
        if not continuation_ids:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens after {context!r}")
        return [self.bos_id] + context_ids, continuation_ids


def bucket_lengths(max_len: int, min_len: int = 16) -> list[int]:
    """Padded lengths that requests are grouped into: powers of two, then max_len."""
    lengths, n = [], min(min_len, max_len)
    while n < max_len:
        lengths.append(n)
        n *= 2
    return lengths + [max_len]


def _score_batch(params, tokens_BT, targets_BT, mask_BT, cfg):
    """Summed masked log-probabilities of the targets, and whether each target is the argmax
    (tested as target logit >= max logit: an argmax over the vocabulary is slow on XLA CPU)."""
    logits_BTV = apply(params, tokens_BT, cfg)
    logp_B = jnp.sum(jnp.where(mask_BT, -cross_entropy(logits_BTV, targets_BT), 0.0), axis=-1)
    target_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
    return logp_B, jnp.all((target_BT >= jnp.max(logits_BTV, axis=-1)) | ~mask_BT, axis=-1)


class Scorer:
    """Scores requests with one model; `tokens_per_s` is the throughput over all calls so far
    (input tokens without padding, compiles included)."""

    def __init__(self, params, model_cfg, batch_tokens: int = 8192, min_len: int = 16):
        score_batch = jax.jit(lambda p, x, y, m: _score_batch(p, x, y, m, model_cfg))
        self._start(lambda x, y, m: score_batch(params, x, y, m), model_cfg.max_len, batch_tokens, min_len)

    def _start(self, batch_fn, max_len: int, batch_tokens: int, min_len: int) -> None:
        """batch_fn(tokens_BT, targets_BT, mask_BT) -> (summed masked log-probabilities_B, greedy_B), arrays
        numpy can read: the model's part of scoring (another model kind brings its own, hf_model.py)."""
        self._fn, self.max_len = batch_fn, max_len
        self.lengths = bucket_lengths(max_len, min_len)
        self.batch_tokens = batch_tokens
        self.tokens, self.seconds = 0, 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def window(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[list[int], int]:
        """(model input, continuation length): the last max_len + 1 tokens, minus the final one."""
        if len(continuation) > self.max_len:
            raise ValueError(
                f"a continuation of {len(continuation)} tokens exceeds the model's context "
                f"model.max_len={self.max_len}")
        if not context:
            raise ValueError("a request needs at least one context token (e.g. <s>)")
        whole = (list(context) + list(continuation))[-(self.max_len + 1):]
        return whole, len(continuation)

    def rows(self, T: int) -> int:
        """Batch size for padded length T: about batch_tokens tokens a batch."""
        return max(1, self.batch_tokens // T)

    def score(self, requests: Sequence[Request], desc: str = "scoring") -> list[tuple[float, bool]]:
        """(summed continuation log-probability, is greedy) for each request, in order."""
        windows = [self.window(c, x) for c, x in requests]
        by_bucket: dict[int, list[int]] = {}
        for i, (whole, _) in enumerate(windows):
            T = next(n for n in self.lengths if n >= len(whole) - 1)
            by_bucket.setdefault(T, []).append(i)
        batches = [(T, idx[k:k + self.rows(T)])
                   for T, idx in sorted(by_bucket.items()) for k in range(0, len(idx), self.rows(T))]
        start, n_tokens, jobs = time.perf_counter(), 0, []
        for T, idx in tqdm(batches, desc=desc, disable=not sys.stderr.isatty() or len(batches) < 4):
            x, y, m = (np.zeros((self.rows(T), T), dt) for dt in (np.int32, np.int32, bool))
            for row, i in enumerate(idx):
                whole, n_cont = windows[i]
                n = len(whole) - 1
                x[row, :n], y[row, :n] = whole[:-1], whole[1:]
                m[row, n - n_cont:n] = True
                n_tokens += n
            jobs.append((idx, self._fn(x, y, m)))  # dispatched asynchronously
        results: list = [None] * len(requests)
        for idx, (logp, greedy) in jobs:
            logp, greedy = np.asarray(logp), np.asarray(greedy)
            for row, i in enumerate(idx):
                results[i] = (float(logp[row]), bool(greedy[row]))
        seconds = time.perf_counter() - start
        self.tokens, self.seconds = self.tokens + n_tokens, self.seconds + seconds
        log.info("%s: %d requests, %d tokens in %.1f s (%.0f tokens/s)",
                 desc, len(requests), n_tokens, seconds, n_tokens / max(seconds, 1e-9))
        return results
