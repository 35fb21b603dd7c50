"""LLaMA model (llama.py) and its parameter / FLOP accounting (counting.py)."""
from simscale.model.llama import apply, init, logical_axes  # noqa: F401
