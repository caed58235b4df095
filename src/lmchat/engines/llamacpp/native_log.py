"""llama.cpp's own log lines, routed into Python's logging (logger ``lmchat.engines.llamacpp.native``).

llama-cpp-python's callback maps an older numbering of ggml's ``enum ggml_log_level`` (this llama.cpp counts
NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5), so its filter let warnings through as errors, and everything
before the first model load (the CPU backend's "load_backend: ..." line) through unfiltered: a chat's first screen
started with llama.cpp's chatter. Here each whole line goes to the logger at its real level: debug and info as
debug, warnings as warnings, errors as errors; ``llamacpp_config: {verbose: true}`` prints every line to stderr,
as llama.cpp does. One warning is known to be false here and logged as debug: with the unified KV cache llama.cpp
compares the whole cache (``n_ctx_seq``) with the trained context, while lmchat caps each sequence at that
context itself (``LoadedModel.context_length``).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading

import llama_cpp

logger = logging.getLogger("lmchat.engines.llamacpp.native")
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_CONTINUE = 5
_KNOWN_FALSE = ("n_ctx_seq", "n_ctx_train")  # both in one line: the unified cache's size against the trained one


class NativeLog:
    """The one callback llama.cpp logs through: whole lines, each at its level."""

    def __init__(self) -> None:
        self.verbose = False
        self._lock = threading.Lock()  # llama.cpp may log from its own threads
        self._pending = ""
        self._level = logging.DEBUG
        self.callback = llama_cpp.llama_log_callback(self._receive)  # kept: ctypes must not free it

    def _receive(self, level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        piece = text.decode("utf-8", errors="replace")
        with self._lock:
            if level != _CONTINUE and not self._pending:
                self._level = _LEVELS.get(level, logging.DEBUG)
            self._pending += piece
            if not self._pending.endswith("\n"):
                return
            lines, self._pending = self._pending, ""
        for line in lines.splitlines():
            self.emit(self._level, line)

    def emit(self, level: int, line: str) -> None:
        if self.verbose:
            print(line, file=sys.stderr, flush=True)
            return
        if level == logging.WARNING and all(word in line for word in _KNOWN_FALSE):
            level = logging.DEBUG
        logger.log(level, "llama.cpp: %s", line)


_ROUTE = NativeLog()


def route_native_logs(verbose: bool | None = None) -> NativeLog:
    """Make llama.cpp log through :data:`logger` (idempotent); ``verbose`` True prints every line to stderr."""
    if verbose is not None:
        _ROUTE.verbose = verbose
    llama_cpp.llama_log_set(_ROUTE.callback, ctypes.c_void_p(0))
    return _ROUTE
