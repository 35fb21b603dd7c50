"""Hugging Face causal LMs (Pythia, OPT, ...) as baselines, scored on simscale's own path.

    scorer, encoder, info = load("EleutherAI/pythia-70m")   # a hub name or a local directory
    evaluator.score_tasks(scorer, encoder, tasks, vocab)   # the same records as a run's

The model runs in float32 on the CPU through torch; requests are bucketed and batched by
scoring.Scorer exactly as for a simscale model. Tokenisation is lm-eval's `hf` model's
(lm_eval.api.model.LM._encode_pair, HFLM.tok_encode), so a baseline scores here as
`lm_eval --model hf` scores it. Needs the `hf` extra (transformers) and torch.
"""
from __future__ import annotations

import numpy as np

from simscale.evaluate.scoring import Scorer

# Tokens a batch: the model's logits hold batch_tokens x vocabulary floats (400 MB at Pythia's 50k).
BATCH_TOKENS = 2048


def _imports():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ImportError(f"scoring a Hugging Face model needs torch and transformers: pip install "
                          f"'simscale[hf]' torch ({e})") from None
    return torch, transformers


class HFEncoder:
    """lm-eval's `hf` tokenisation: the tokenizer's own special tokens (add_special_tokens left to the
    tokenizer, e.g. OPT's `</s>` first, none for Pythia); context whitespace moves to the continuation,
    whose tokens are those of encode(context + continuation) after encode(context); an empty context is
    the prefix token (BOS, else EOS) and the continuation is encoded without special tokens."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if self.bos_id is None:
            raise ValueError("the tokenizer has neither a BOS nor an EOS token to start empty contexts with")
        self._bos_text = tokenizer.decode(self.bos_id)

    def encode(self, text: str) -> list[int]:
        """As HFLM.tok_encode: the tokenizer's special tokens, unless the text starts with the BOS text."""
        special = {"add_special_tokens": False} if text.startswith(self._bos_text) else {}
        return self.tokenizer.encode(text, **special)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            return ([self.bos_id], cont) if cont[0] != self.bos_id else (cont[:1], cont[1:])
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        context_ids = self.encode(context)
        continuation_ids = self.encode(context + continuation)[len(context_ids):]
        if not continuation_ids:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens after {context!r}")
        return context_ids, continuation_ids


def max_length(model_config, tokenizer, default: int = 2048) -> int:
    """The model's context window as lm-eval resolves it: n_positions, max_position_embeddings, n_ctx,
    then the tokenizer's model_max_length, then 2048."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(model_config, attr, None) is not None:
            return int(getattr(model_config, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit < 1e20 else default


class HFScorer(Scorer):
    """scoring.Scorer over a transformers causal LM (float32, CPU, no gradients)."""

    def __init__(self, model, max_len: int, batch_tokens: int = BATCH_TOKENS, min_len: int = 16):
        self.model = model.float().eval()
        self._start(self._score_batch, max_len, batch_tokens, min_len)

    def _score_batch(self, tokens_BT, targets_BT, mask_BT):
        """Log-softmax at the continuation positions only (K of them): a [K, V] array, not [B, T, V]."""
        torch, _ = _imports()
        used_B = mask_BT.any(axis=1)  # the padding rows of a bucket's last batch are not computed
        logp_B, greedy_B = np.zeros(len(mask_BT), np.float64), np.ones(len(mask_BT), bool)
        if not used_B.any():
            return logp_B, greedy_B
        mask = torch.from_numpy(mask_BT[used_B])
        with torch.no_grad():
            logits_BTV = self.model(input_ids=torch.from_numpy(tokens_BT[used_B].astype(np.int64))).logits
            logits_KV = logits_BTV[mask].float()
            target_K = torch.from_numpy(targets_BT[used_B].astype(np.int64))[mask]
            picked_K = logits_KV.gather(-1, target_K[:, None])[:, 0]
            logp_K = (picked_K - torch.logsumexp(logits_KV, dim=-1)).double()
            greedy_K = picked_K >= logits_KV.max(-1).values
        row_K = torch.nonzero(mask)[:, 0]  # which used row each continuation position belongs to
        n_used = int(used_B.sum())
        logp_B[used_B] = torch.zeros(n_used, dtype=torch.float64).index_add_(0, row_K, logp_K).numpy()
        misses = torch.zeros(n_used, dtype=torch.int64).index_add_(0, row_K, (~greedy_K).long())
        greedy_B[used_B] = (misses == 0).numpy()
        return logp_B, greedy_B


def param_counts(model) -> dict[str, int]:
    """Total parameters, and non-embedding ones: less every embedding table (tokens, learned positions)
    and the output head unless it shares the input embedding's weights (Kaplan et al. 2020)."""
    torch, _ = _imports()
    total = sum(p.numel() for p in model.parameters())
    tables = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings()
    if head is not None:
        tables[id(head.weight)] = head.weight.numel()
    return {"params_total": int(total), "params_nonembedding": int(total - sum(tables.values()))}


def load(name: str, batch_tokens: int = BATCH_TOKENS) -> tuple[HFScorer, HFEncoder, dict]:
    """(scorer, encoder, info) of a Hugging Face causal LM: a hub name or a local directory. info:
    the model name, its parameter counts and context window."""
    _, transformers = _imports()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
        model = transformers.AutoModelForCausalLM.from_pretrained(name)
    except (OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FileNotFoundError(f"--hf {name}: cannot load a causal LM and tokenizer ({reason})") from None
    window = max_length(model.config, tokenizer)
    info = {"model": name, **param_counts(model), "max_len": window, "dtype": "float32"}
    return HFScorer(model, window, batch_tokens), HFEncoder(tokenizer), info
