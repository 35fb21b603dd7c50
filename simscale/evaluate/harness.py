"""An lm-evaluation-harness model over a simscale run, so any harness task runs unchanged.

    lm_eval --model simscale --model_args run_dir=RUNDIR --tasks copa,piqa --include_path ...
    (register it first: `import simscale.evaluate.harness`), or in Python:
    lm_eval.simple_evaluate(model=SimscaleLM(run_dir=RUNDIR), tasks=[...])

Needs the optional `lm-eval` dependency. Requests go through simscale's own scorer
(scoring.py), so harness numbers and simscale's numbers agree.
"""
from __future__ import annotations

import pathlib

try:
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    import lm_eval.models  # noqa: F401 - lm-eval registers its own models (hf, ...) only into an empty registry
except ImportError as e:
    raise ImportError(f"the lm-eval adapter needs lm-eval: pip install 'simscale[lmeval]' ({e})") from None

from simscale.evaluate.scoring import Scorer, TextEncoder


@register_model("simscale")
class SimscaleLM(LM):
    """loglikelihood and loglikelihood_rolling; text generation is not supported."""

    def __init__(self, run_dir=None, batch_tokens: int = 8192, scorer: Scorer | None = None,
                 encoder: TextEncoder | None = None, **harness_options):
        # harness_options: batch_size, device, ... that lm-eval passes to every model; unused here.
        super().__init__()
        if scorer is None or encoder is None:
            if run_dir is None:
                raise ValueError("SimscaleLM needs run_dir=RUNDIR (or a scorer and an encoder)")
            from simscale.train.checkpoint import load_params

            params, cfg = load_params(run_dir)
            scorer = Scorer(params, cfg.model, batch_tokens=int(batch_tokens))
            encoder = TextEncoder.from_file(pathlib.Path(run_dir) / "tokenizer.json")
        self.scorer, self.encoder = scorer, encoder

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.scorer.score([self.encoder.encode_pair(*r.args) for r in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-string log-likelihood over lm-eval's disjoint rolling windows, <s> first."""
        pieces, owner = [], []
        for i, r in enumerate(requests):
            windows = lm_utils.get_rolling_token_windows(
                token_list=self.encoder.encode(r.args[0]), prefix_token=self.encoder.bos_id,
                max_seq_len=self.scorer.max_len, context_len=1)
            for window in map(lm_utils.make_disjoint_window, windows):
                pieces.append(window)
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, self.scorer.score(pieces, desc="rolling")):
            totals[i] += logprob
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "simscale's lm-eval adapter scores log-likelihoods only: use multiple-choice or "
            "perplexity tasks, not generation tasks")
