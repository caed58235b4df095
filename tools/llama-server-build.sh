#!/usr/bin/env sh
# Build llama.cpp's own `llama-server` (the peer of the side-by-side serving benchmark, issue 23) from the llama.cpp vendored
# in the llama-cpp-python sdist, so the peer runs exactly the llama.cpp that lmchat's llamacpp engine runs. Only the
# llama-server target is built, into lmchat's cache; nothing of llama.cpp is kept in this repository.
#
#   sh tools/llama-server-build.sh [native|all]      prints the path of the llama-server binary
#
#   native (default)  GGML_NATIVE=ON: -march=native, the CPU backend linked in (how llama.cpp users build it)
#   all               every x86-64 CPU backend variant, the best loaded at run time (how lmchat's wheel is built),
#                     but the AMX one (sapphirerapids), whose kernels crash the first decode: left out as lmchat's
#                     llama.cpp engine leaves it out (native refuses to build on an AMX CPU for the same reason)
#
# LLAMA_CPP_PYTHON_VERSION picks the sdist (default: the installed llama-cpp-python, else 0.3.36); LMCHAT_CACHE the
# cache folder (default ~/.cache/lmchat). A native build is keyed by this CPU's flags too, so a cache folder shared
# by machines never hands one CPU's binary to another. Takes 5-15 minutes on 2 cores, once.
set -eu
MODE=${1:-native}
PYTHON=${PYTHON:-python3}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || echo 0.3.36)}
COMMON="-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF"
case "$MODE" in
  native) if grep -qm1 '^flags.* amx_tile' /proc/cpuinfo 2>/dev/null; then
            # llama.cpp's AMX kernels crash the first decode here (as lmchat's own engine found): build every
            # variant and leave the AMX one out instead, as lmchat's llama.cpp engine does
            echo "lmchat: this CPU has AMX; a native llama-server crashes on it, use: sh tools/llama-server-build.sh all" >&2
            exit 2
          fi
          FLAGS="$COMMON -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF"
          CPU=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-12) ;;
  all)    FLAGS="$COMMON -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DBUILD_SHARED_LIBS=ON \
-DCMAKE_BUILD_RPATH=\$ORIGIN"
          CPU=any ;;
  *) echo "usage: sh tools/llama-server-build.sh [native|all]" >&2; exit 2 ;;
esac
KEY=$(printf '%s|%s|%s' "$VERSION" "$FLAGS" "$CPU" | sha256sum | cut -c1-12)
HOUSE=${LMCHAT_CACHE:-$HOME/.cache/lmchat}/peers/llama-server-$VERSION-$MODE-$KEY
if [ ! -x "$HOUSE/bin/llama-server" ]; then
  echo "lmchat: building llama-server from llama-cpp-python $VERSION's llama.cpp ($MODE; once, 5-15 min)" >&2
  mkdir -p "$(dirname "$HOUSE")"
  WORK=$(mktemp -d "$HOUSE.partial.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  "$PYTHON" -m pip download -q --no-binary :all: --no-deps -d "$WORK" "llama-cpp-python==$VERSION" >&2
  tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
  SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
  GENERATOR=""
  command -v ninja >/dev/null 2>&1 && GENERATOR="-G Ninja"
  # shellcheck disable=SC2086  (the flag lists are meant to split into words)
  cmake -S "$SRC" -B "$WORK/build" $GENERATOR $FLAGS -DCMAKE_INSTALL_PREFIX="$WORK/install" \
    -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib' >&2
  cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$WORK/install/bin" "$WORK/install/lib"
  cp "$WORK/build/bin/llama-server" "$WORK/install/bin/"
  if [ "$MODE" = all ]; then
    # the shared libraries (llama, ggml, server-impl, common) and every CPU variant beside the binary: its RUNPATH
    # is $ORIGIN, and ggml looks for its CPU variants in the executable's folder
    find "$WORK/build" -name '*.so*' -exec cp -P {} "$WORK/install/bin/" \;
    rm -f "$WORK/install/bin/libggml-cpu-sapphirerapids.so"  # AMX: left out, as lmchat's engine leaves it out
  fi
  printf 'llama-cpp-python %s\nmode %s\ncmake %s\n' "$VERSION" "$MODE" "$FLAGS" > "$WORK/install/BUILD_INFO"
  rm -rf "$HOUSE" && mv "$WORK/install" "$HOUSE"
fi
echo "$HOUSE/bin/llama-server"
