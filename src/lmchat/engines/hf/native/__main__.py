"""Build the native decode kernels for this machine now: ``python -m lmchat.engines.hf.native``."""

import sys

from lmchat.engines.hf.native import NativeUnavailable, build_dir, is_built, load

already = is_built()
try:
    load()
except NativeUnavailable as exc:
    print(f"lmchat: native decode kernels not built: {exc}", file=sys.stderr)
    sys.exit(1)
print(f"lmchat: native decode kernels {'already built' if already else 'built'} in {build_dir()}")
