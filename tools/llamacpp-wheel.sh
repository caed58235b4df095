#!/usr/bin/env sh
# Install llama-cpp-python built the way llama.cpp's own releases are: ggml's CPU backend as one library per x86-64
# feature level (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS), the best one chosen at run time
# (src/lmchat/engines/llamacpp/cpu_backend.py). The wheel runs on any x86-64 CPU, so it is built once per machine
# (long: every variant is compiled) into lmchat's cache and installed from there afterwards.
# GGML_BACKEND_DIR is typed STRING: as a PATH, CMake would make it absolute inside the build tree, outside the wheel.
#
#   sh tools/llamacpp-wheel.sh .venv/bin/python
set -eu
PYTHON=$1
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CMAKE_FLAGS="-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF -DGGML_BACKEND_DIR:STRING=llama_cpp/lib \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
PYTAG=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
KEY=$(printf '%s|%s|%s' "$VERSION" "$CMAKE_FLAGS" "$PYTAG" | sha256sum | cut -c1-12)
HOUSE=${LMCHAT_CACHE:-$HOME/.cache/lmchat}/wheels/llama-cpp-python-$VERSION-$KEY
if ! ls "$HOUSE"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "lmchat: building llama-cpp-python $VERSION for every x86-64 CPU (once per machine; 20-40 min on 2 cores)"
  mkdir -p "$(dirname "$HOUSE")"
  PARTIAL=$(mktemp -d "$HOUSE.partial.XXXXXX")
  # --no-cache-dir: pip's wheel cache does not know CMAKE_ARGS and could hand back a wheel built another way
  CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PYTHON" -m pip wheel -q --no-deps --no-cache-dir \
    --no-binary llama-cpp-python -w "$PARTIAL" "llama-cpp-python==$VERSION"
  rm -rf "$HOUSE" && mv "$PARTIAL" "$HOUSE"
fi
"$PYTHON" -m pip install -q --no-deps --force-reinstall "$HOUSE"/llama_cpp_python-*.whl
"$PYTHON" -m pip install -q "llama-cpp-python==$VERSION"  # its pure-Python dependencies
