"""When the worker's model moves onto the native kernels (:mod:`lmchat.engines.hf.native`): the one-token step
of a lean-forward model, and the multiplies of a quantized one (:mod:`lmchat.engines.hf.quant`), whatever its runner.

The kernels are loaded at once when built, else built in the background while the engine serves with the Python
forward (``native_decode: auto``); the worker polls between steps and switches when the build is done.
"""

from __future__ import annotations

import logging
from typing import Any

from lmchat.engines.hf.native import NativeBuild
from lmchat.engines.hf.quant import activations_for, is_quantized, use_activations, use_native_kernels
from lmchat.engines.hf.runner import enable_native, native_unsupported
from lmchat.errors import ConfigError

logger = logging.getLogger("lmchat.engines.hf.worker")


class NativeSwitch:
    """One model's way onto the native kernels, by its ``native_decode`` setting (auto/on/off) and, for quantized
    weights, its ``quantized_activations`` setting (auto/off)."""

    def __init__(self, setting: str, model: Any, quantized_activations: str = "off") -> None:
        self.setting = setting
        self.quantized = is_quantized(model)
        self.quantized_activations = quantized_activations
        self.activations = "float32"  # of the batched quantized multiplies, once the kernels are in use
        self.build: NativeBuild | None = None  # while the module is awaited

    def before_runner(self) -> None:
        """A quantized model takes the kernels before the runner check, when they are built already."""
        if self.quantized and self.setting != "off":
            self.build = NativeBuild(self.setting)
            self.poll(None)

    def start(self, runner: Any) -> None:
        """Native one-token steps for ``runner``: now if built, else once built in the background."""
        if self.setting == "off":
            return
        reason = native_unsupported(runner)
        if reason:
            if self.setting == "on":
                raise ConfigError(f"native_decode: on needs {reason}; use native_decode: auto or off.")
            logger.info("Native decode step not used: it needs %s.", reason)
            if not self.quantized:
                self.build = None
                return
        if self.build is None:
            self.build = NativeBuild(self.setting)
        if not self.poll(runner) and self.setting == "on":
            raise ConfigError("native_decode: on, but the native decode step does not reproduce this model's "
                              "forward pass (see the log); use native_decode: auto or off.")

    def poll(self, runner: Any) -> bool:
        """Switch once the build is done (the step is checked first); True if the native step is now in use."""
        if self.build is None or not self.build.done:
            return False
        module, self.build = self.build.result(), None
        if module is not None and self.quantized:
            activations = activations_for(module, self.quantized_activations)
            use_native_kernels(module)
            use_activations(activations)  # on the worker thread, which runs every forward pass of the model
            if activations != self.activations:  # (polled twice when built already: said once)
                logger.info("Batched multiplies by the quantized weights take int8 activations (%s dot products).",
                            module.int8_paths()[0])
            self.activations = activations
        if module is None or runner is None or native_unsupported(runner):
            return False
        if not enable_native(runner, module, self.activations):
            return False
        logger.info("Native decode step in use for one-token steps.")
        return True
