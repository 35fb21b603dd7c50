# simscale: make install | test | bench | demo | figures
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdir/cpu
export SIMSCALE_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: install install-extras test bench demo figures clean

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
	$(PY) -m pip install -q -e '.[ray,lmeval,hf]'

test: install
	$(PY) -m pytest -q tests

# Training step vs the HF peer (when torch+transformers are installed), span filter MB/s and
# pipeline tokens/s, scaling-law fit time.
bench: install
	$(PY) -m simscale.bench
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

clean:
	rm -rf $(VENV) .pytest_cache

# Randomised fault injection (not part of `make test`): kill -9 a smoke sweep at FAULTS_KILLS random
# moments, corrupt a run file after each, restart, check the results against an uninterrupted sweep.
FAULTS_KILLS ?= 10
FAULTS_SEED ?= 0
.PHONY: faults
faults: install
	nice -n 10 $(PY) tests/faults_random.py --kills $(FAULTS_KILLS) --seed $(FAULTS_SEED)
