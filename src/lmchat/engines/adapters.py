"""The named LoRA adapters an engine serves, and which requests use each (no torch, engine-independent).

The facade checks a call's ``adapter`` against :meth:`AdapterSet.check`; each answer's stream holds its adapter
(:meth:`AdapterSet.hold`) while it runs, so :meth:`BaseEngine.unload_adapter` first refuses new requests for the
adapter, then waits until the last request using it has ended, and only then asks the engine to free it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lmchat.errors import InvalidRequestError, ModelNotFoundError

UNLOAD_POLL_S = 0.02


@dataclass(frozen=True)
class AdapterInfo:
    """One served adapter: its name (what requests choose), its folder, and its rank once loaded."""

    name: str
    path: str
    rank: int | None = None


class AdapterSet:
    """Served adapters by name, with the number of running requests that use each (thread-safe)."""

    def __init__(self, max_loras: int) -> None:
        self.max_loras = max_loras
        self._adapters: dict[str, AdapterInfo] = {}
        self._in_use: dict[str, int] = {}
        self._unloading: set[str] = set()
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self._adapters

    def __iter__(self) -> Iterator[AdapterInfo]:
        return iter(list(self._adapters.values()))

    def __len__(self) -> int:
        return len(self._adapters)

    def names(self) -> list[str]:
        return list(self._adapters)

    def check(self, name: str | None, param: str = "adapter") -> str | None:
        """``name`` if it is a served adapter (None: the base model); else an error listing what is served."""
        if name is None:
            return None
        if not isinstance(name, str):
            raise InvalidRequestError(f"{param} must be an adapter's name (a string).", param=param)
        with self._lock:
            if name in self._adapters and name not in self._unloading:
                return name
            unloading = name in self._unloading
        served = ", ".join(self._adapters) or "none"
        why = "is being unloaded" if unloading else "is not a loaded LoRA adapter"
        raise ModelNotFoundError(f"The adapter '{name}' {why} (loaded: {served}).", param=param)

    @contextmanager
    def hold(self, name: str | None) -> Iterator[None]:
        """Mark one request as using ``name`` while the block runs (None: nothing to hold)."""
        if name is None:
            yield
            return
        with self._lock:
            if name not in self._adapters or name in self._unloading:
                raise ModelNotFoundError(f"The adapter '{name}' was unloaded before this request started.",
                                         param="model")
            self._in_use[name] = self._in_use.get(name, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_use[name] -= 1

    def in_use(self, name: str) -> int:
        return self._in_use.get(name, 0)

    # --- loading and unloading (BaseEngine.load_adapter / unload_adapter) -----------------------------------
    def begin_load(self, name: str, param: str = "lora_name") -> None:
        with self._lock:
            if name in self._adapters or name in self._loading:
                raise InvalidRequestError(f"An adapter named '{name}' is already loaded; unload it first or choose "
                                          "another name.", param=param)
            if len(self._adapters) + len(self._loading) >= self.max_loras:
                raise InvalidRequestError(f"{self.max_loras} adapters are loaded already (max_loras); unload one "
                                          "first.", param=param)
            self._loading.add(name)

    def end_load(self, name: str, info: AdapterInfo | None) -> None:
        with self._lock:
            self._loading.discard(name)
            if info is not None:
                self._adapters[name] = info

    async def begin_unload(self, name: str, param: str = "lora_name") -> None:
        """Refuse new requests for ``name``, then wait for the running ones to end."""
        with self._lock:
            if name not in self._adapters or name in self._unloading:
                raise ModelNotFoundError(f"No loaded adapter is named '{name}' (loaded: "
                                         f"{', '.join(self._adapters) or 'none'}).", param=param)
            self._unloading.add(name)
        while self.in_use(name):
            await asyncio.sleep(UNLOAD_POLL_S)

    def end_unload(self, name: str, removed: bool) -> None:
        with self._lock:
            self._unloading.discard(name)
            if removed:
                self._adapters.pop(name, None)
                self._in_use.pop(name, None)
