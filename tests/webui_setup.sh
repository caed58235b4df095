#!/bin/sh
# What the web UI's browser tests need on a fresh machine: Debian's Chromium (Playwright drives it; Playwright's own
# browser downloads cannot be used here) and the Python packages gradio and playwright.
# Usage: sh tests/webui_setup.sh [PYTHON]   (PYTHON defaults to .venv/bin/python)
set -eu
PYTHON="${1:-${PYTHON:-.venv/bin/python}}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"

if ! "$PYTHON" -c "import gradio, playwright" 2>/dev/null; then
    "$PYTHON" -m pip install -q -c "$HERE/constraints.txt" gradio playwright
fi

if [ ! -x /usr/bin/chromium ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "webui_setup: /usr/bin/chromium is missing and there is no apt-get; install Chromium yourself." >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version >/dev/null 2>&1
