# simscale: make install | test | bench | demo | figures | gpu-check
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdir/cpu
export SIMSCALE_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: install install-extras test bench demo figures gpu-wheels gpu-check clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Optional integrations tested in CI: Ray executor and the lm-eval adapter.
# torch is pinned to the CPU wheel so lm-eval does not pull a multi-GB CUDA build.
install-extras: install
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[ray,lmeval,hf,wandb]'

test: install
	$(PY) -m pytest -q tests

# Training step vs the HF peer (when torch+transformers are installed), span filter MB/s and
# pipeline tokens/s, scaling-law fit time.
bench: install
	$(PY) -m simscale.step_bench
	$(PY) -m simscale.packed_bench
	$(PY) -m simscale.data bench
	$(PY) -m simscale.analysis bench

# The main job: the cpu preset end to end (data, 16 runs and their zero-shot evals on two workers,
# each on its own cores), then fits and figures even when a run failed; exits non-zero when either failed.
demo: install
	$(PY) -m simscale.sweep --config sweeps/grid.py:preset=cpu --workdir $(WORKDIR) --executor process; \
	status=$$?; { $(MAKE) --no-print-directory figures && cat figures/summary.md \
	&& echo "figures, fits.json and summary.md are in $(CURDIR)/figures"; } || [ $$status -ne 0 ] || status=1; \
	exit $$status

figures: install
	$(PY) -m simscale.analysis report --workdir $(WORKDIR) --out figures

# The prepared accelerator check (docs/training.md, "GPU check"): the image's own python (jax with
# CUDA, optax, orbax, tokenizers), plus the wheels of ../shared/device-wheels that the image
# lacks (tensorflow-datasets, grain, array_record, ml-collections, ...), installed into .site from
# .whl/ (both ignored by git) when they do not import. `make gpu-wheels` here fills .whl/, which
# travels with the checkout to a machine without ../shared. Never jax: it must match the CUDA plugin.
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= workdir/gpu_check
DEVICE_WHEELS ?= ../shared/device-wheels
GPU_IMPORTS := import tensorflow_datasets, grain, array_record, ml_collections

gpu-wheels:
	mkdir -p .whl && cp $(DEVICE_WHEELS)/*.whl .whl/

gpu-check:
	@if ! PYTHONPATH=$(CURDIR)/.site $(GPU_PYTHON) -c '$(GPU_IMPORTS)' 2>/dev/null; then \
	  ls .whl/*.whl >/dev/null 2>&1 || $(MAKE) --no-print-directory gpu-wheels || exit 1; \
	  echo "installing .whl/*.whl into .site"; \
	  $(GPU_PYTHON) -m pip install -q --no-index --no-deps --target .site .whl/*.whl || exit 1; \
	fi
	PYTHONPATH=$(CURDIR)/.site:$(CURDIR) $(GPU_PYTHON) -m simscale.gpu_check --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# Randomised fault injection (not part of `make test`): kill -9 a smoke sweep at FAULTS_KILLS random
# moments, corrupt a run file after each, restart, check the results against an uninterrupted sweep.
FAULTS_KILLS ?= 10
FAULTS_SEED ?= 0
.PHONY: faults
faults: install
	nice -n 10 $(PY) tests/faults_random.py --kills $(FAULTS_KILLS) --seed $(FAULTS_SEED)
