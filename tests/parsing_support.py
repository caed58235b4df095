"""Helpers the parsing tests share: streaming an answer through a parser, and SmolLM2's tokenizer for
token-by-token streams (the markers of most families are split over several of its tokens)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmchat.parsing import OutputDelta, OutputParser, ParsedOutput, collect


@pytest.fixture(scope="session")
def smollm2_tokenizer(tiny_tokenizer_dir: Path) -> Any:
    """SmolLM2's real tokenizer (taken out of the default model's GGUF, see tests/tiny_tokenizer.py)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))


def token_deltas(tokenizer: Any, text: str) -> list[str]:
    """The text as an engine streams it: one delta per token, held while a character is incomplete."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    deltas, sent = [], ""
    for count in range(1, len(ids) + 1):
        decoded = tokenizer.decode(ids[:count], skip_special_tokens=False)
        if decoded.endswith("\ufffd") and count < len(ids):
            continue
        assert decoded.startswith(sent)
        deltas.append(decoded[len(sent) :])
        sent = decoded
    assert sent == text
    return deltas


def stream(parser: OutputParser, chunks: list[str]) -> tuple[ParsedOutput, list[OutputDelta]]:
    deltas = [delta for chunk in chunks for delta in parser.feed(chunk)] + parser.finish()
    return collect(deltas), deltas


def comparable(output: ParsedOutput) -> tuple[Any, ...]:
    """Everything but the generated call ids (model-written ids are compared)."""
    calls = [(call.name, call.arguments, None if call.id.startswith("call_") else call.id)
             for call in output.tool_calls]
    return output.content or "", calls, output.reasoning


def calls_of(output: ParsedOutput) -> list[tuple[str, Any]]:
    """The calls as (name, decoded arguments); the arguments must be a JSON object."""
    decoded = [(call.name, json.loads(call.arguments)) for call in output.tool_calls]
    assert all(isinstance(arguments, dict) for _, arguments in decoded)
    return decoded


def assert_streams_agree(make_parser: Any, text: str, extra_chunkings: list[list[str]] = ()) -> ParsedOutput:
    """One piece, one character at a time, cut in two at every position, and any ``extra_chunkings``: all give
    the same result (content only grows, so this also shows no piece of markup ever reached the content)."""
    expected = make_parser().parse(text)
    chunkings = [list(text), *([text[:cut], text[cut:]] for cut in range(len(text) + 1)), *extra_chunkings]
    for chunks in chunkings:
        assert comparable(stream(make_parser(), chunks)[0]) == comparable(expected), chunks
    return expected
