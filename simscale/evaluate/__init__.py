"""Zero-shot evaluation: log-likelihood scoring (scoring.py), tasks (tasks.py), the simplified
task filter (variant_filter.py), metrics and records (evaluator.py), run directories (run.py) and an
lm-evaluation-harness adapter (harness.py, needs the lm-eval extra)."""
from simscale.evaluate.run import evaluate_run  # noqa: F401
