"""The prepared accelerator check: `python -m simscale.gpu_check --out DIR [--tiny]` (see __main__)."""
