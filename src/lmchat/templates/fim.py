"""Fill-in-the-middle prompts: completions' ``suffix``, in the model's own FIM tokens.

A code model trained for FIM marks the text before the gap, the text after it and the start of the middle with
three special tokens of its vocabulary (llama.cpp's ``/infill`` reads the same ones from the GGUF). lmchat finds
the first family of markers that are each one token of the model's vocabulary and writes the prompt in the
prefix-suffix-middle order they were trained on: ``PRE prompt SUF suffix MID``; the answer is the middle. A model
with none of them has no fill-in-the-middle: ``suffix`` is refused, naming the markers looked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lmchat.errors import InvalidRequestError, UnsupportedError

if TYPE_CHECKING:
    from lmchat.engines.base import BaseEngine

# (family, prefix, suffix, middle): the markers of the code models that fill in the middle
FIM_MARKERS: tuple[tuple[str, str, str, str], ...] = (
    ("StarCoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("Qwen2.5-Coder/CodeGemma", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("DeepSeek-Coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
)


def fim_markers(engine: BaseEngine) -> tuple[str, str, str] | None:
    """The model's (prefix, suffix, middle) markers: the first family whose markers are one token each."""
    for _, *markers in FIM_MARKERS:
        if all(_is_one_token(engine, marker) for marker in markers):
            return markers[0], markers[1], markers[2]
    return None


def fill_in_middle_prompt(engine: BaseEngine, prompt: str | Sequence[int], suffix: str) -> str:
    """The prompt whose answer fills the gap between ``prompt`` and ``suffix``."""
    if not isinstance(prompt, str):
        raise InvalidRequestError("suffix needs a text prompt (not token ids).", param="suffix")
    markers = fim_markers(engine)
    if markers is None:
        families = ", ".join(f"{family} ({' '.join(marks)})" for family, *marks in FIM_MARKERS)
        raise UnsupportedError(
            f"suffix is not supported by the model '{engine.info.name}': its vocabulary has no fill-in-the-middle "
            f"tokens (looked for {families}). Leave suffix out, or serve a code model trained for FIM.",
            param="suffix",
        )
    prefix_marker, suffix_marker, middle_marker = markers
    return f"{prefix_marker}{prompt}{suffix_marker}{suffix}{middle_marker}"


def _is_one_token(engine: BaseEngine, marker: str) -> bool:
    """Whether ``marker`` is one token of the vocabulary that stays one token next to text (a special token, not
    a word that happens to be in the vocabulary)."""
    try:
        return len(engine.tokenize(marker)) == 1 and len(engine.tokenize(f"x{marker}")) == len(engine.tokenize("x")) + 1
    except (InvalidRequestError, UnsupportedError):
        return False
