#!/usr/bin/env sh
# llama.cpp and the native decode kernels on an emulated CPU without AVX-512 (QEMU user mode; default: Haswell,
# AVX2 + FMA), against the same checks on this machine's CPU. Needs Debian's qemu-user (apt-get install qemu-user).
#
#   sh tools/check-cpu.sh .venv/bin/python [QEMU_CPU]      (the result is recorded in docs/engines.md)
set -eu
PYTHON=$1
CPU=${2:-Haswell}
command -v qemu-x86_64 >/dev/null || { echo "check-cpu needs QEMU user mode: apt-get install qemu-user" >&2; exit 2; }
HERE=$("$PYTHON" tools/check_cpu.py)
echo "this CPU:        $HERE"
THERE=$(qemu-x86_64 -cpu "$CPU" "$PYTHON" tools/check_cpu.py 2>/dev/null)
echo "emulated $CPU: $THERE"
"$PYTHON" - "$HERE" "$THERE" "$CPU" <<'PY'
import json, sys
here, there = (json.loads(arg) for arg in sys.argv[1:3])
problems = []
if not there["native_check_passed"]:
    problems.append("the native kernels failed the start-up check on the emulated CPU")
if not there["native_quantized_check_passed"]:
    problems.append("the native quantized kernels (int8, int4) failed the start-up check on the emulated CPU")
if not there["int8_activations_check_passed"] or not here["int8_activations_check_passed"]:
    problems.append(f"the int8-activation kernels failed their check (paths here {here['int8_paths']}, "
                    f"emulated {there['int8_paths']})")
if "int8-vnni" in there["int8_paths"] and "vnni" not in sys.argv[3].lower():
    problems.append("the kernels found VNNI on an emulated CPU without it: the path must come from its CPUID")
if "avx512" in " ".join(there["native_flags"]).lower() or "x86-64-v4" in " ".join(there["native_flags"]):
    problems.append(f"the native kernels were built for AVX-512 on a CPU without it: {there['native_flags']}")
if not there["llama_cpp_text"].strip():
    problems.append("llama.cpp answered nothing on the emulated CPU")
if here["llama_cpp_variant"] == there["llama_cpp_variant"] and here["llama_cpp_text"] != there["llama_cpp_text"]:
    problems.append("the same llama.cpp variant answered differently on the emulated CPU")
print("\n".join(problems) or f"ok: llama.cpp used {there['llama_cpp_variant']!r}, the native kernels "
      f"{there['native_flags'][-2]} (float32, int8, int4) passed the start-up check and int8 activations "
      f"{there['int8_paths']} theirs, on the emulated CPU (here: {here['int8_paths']})")
sys.exit(1 if problems else 0)
PY
