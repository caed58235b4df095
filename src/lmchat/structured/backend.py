"""The grammar library behind our engines' constrained decoding: llguidance (chosen by measurement, see
docs/benchmarks.md "Structured output").

* :func:`check` (the facade, once per request, no tokenizer needed): the constraint compiles, or an
  :class:`~lmchat.errors.InvalidRequestError` names what the library cannot enforce (``Unimplemented keys:
  ["not"]``...). llguidance refuses what it cannot guarantee (xgrammar accepts more schemas by ignoring such
  keywords, which breaks "valid every time").
* :class:`TokenizerGrammars` (an engine, per tokenizer): the compiled-grammar cache, keyed by the constraint
  (:attr:`Constraint.key`), whose entries are copied into each request's own matcher; the batched mask fill.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import OrderedDict
from typing import Any

from lmchat.errors import InvalidRequestError, MissingDependencyError
from lmchat.structured.constraint import Constraint

CACHE_SIZE = 256  # compiled grammars kept per tokenizer
DEFAULT_WHITESPACE = r"[\x20\x0A\x0D\x09]{0,48}"
"""JSON's whitespace between tokens, at most 48 characters in a row: enough for pretty-printed JSON (a line break
and its indent), and a model that loops on whitespace (a known failure of unbounded JSON whitespace) must go on
writing the value. ``whitespace_pattern`` (vLLM's) replaces it; ``disable_any_whitespace`` allows none."""
_KIND_NAMES = {"json_object": "JSON object", "json_schema": "JSON schema", "regex": "regex", "choice": "choice",
               "grammar": "grammar", "structural_tag": "structural tag"}


def llguidance() -> Any:
    """The llguidance module, or a MissingDependencyError with the install command."""
    try:
        import llguidance as module
    except ImportError:
        raise MissingDependencyError("Structured output needs the Python package 'llguidance'. Install it with: "
                                     "pip install 'lmchat[structured]'") from None
    return module


def check(constraint: Constraint) -> None:
    """Raise an InvalidRequestError naming the part the grammar library cannot enforce (none: it compiles)."""
    grammar_text(constraint)  # a malformed definition is reported as such
    error = _error_for_key(constraint.key)
    if error:
        what = _KIND_NAMES[constraint.kind]
        raise InvalidRequestError(
            f"The {what} given in {constraint.param} cannot be enforced: {_reason(error)}. Remove or rewrite "
            "that part (lmchat refuses what it cannot guarantee rather than ignoring it).", param=constraint.param)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _error_for_key(key: tuple[Any, ...]) -> str | None:
    """The library's reason for refusing a constraint's grammar, or None (cached: checked once per schema)."""
    is_error, messages = llguidance().LLMatcher.validate_grammar_with_warnings(_grammar_for_key(key), None)
    return messages[0] if is_error else None


def _reason(message: str) -> str:
    message = message.strip().rstrip(".")
    if "coerce_one_of" in message:  # llguidance's advice is an option of its own that lmchat does not offer
        return "oneOf whose alternatives may overlap is not supported (anyOf is, if any match may do)"
    return message


@functools.lru_cache(maxsize=CACHE_SIZE)
def _grammar_for_key(key: tuple[Any, ...]) -> str:
    kind, schema, regex, choices, grammar, _syntax, tag, flexible, whitespace, additional = key
    llg = llguidance()
    options: dict[str, Any] = {"whitespace_flexible": flexible}
    if flexible:
        options["whitespace_pattern"] = whitespace or DEFAULT_WHITESPACE
    if kind == "json_object":
        return llg.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=options)
    if kind == "json_schema":
        value = json.loads(schema)
        return _json_grammar(llg, closed_objects(value) if not additional else value, options)
    if kind == "regex":
        return llg.LLMatcher.grammar_from_regex(regex)
    if kind == "choice":
        return llg.grammar_from("choice", json.dumps(list(choices)))
    if kind == "grammar":
        return _lark(llg, grammar)
    return _structural_tag(llg, tag)


def _json_grammar(llg: Any, schema: Any, options: dict[str, Any]) -> str:
    """The grammar of a JSON schema. A ``format`` the library does not know is dropped: JSON Schema makes
    ``format`` an annotation, which validators ignore for formats they do not know; every other keyword the
    library cannot enforce is an error (``check``)."""
    for _ in range(32):
        grammar = llg.LLMatcher.grammar_from_json_schema(schema, defaults=options)
        error = llg.LLMatcher.validate_grammar(grammar, None)
        unknown = error.removeprefix(_UNKNOWN_FORMAT).strip() if error.startswith(_UNKNOWN_FORMAT) else None
        if not unknown:
            return grammar
        schema = without_format(schema, unknown)
    return grammar


_UNKNOWN_FORMAT = "Unknown format:"


def without_format(schema: Any, name: str) -> Any:
    """A copy of ``schema`` without ``"format": name`` anywhere."""
    if isinstance(schema, list):
        return [without_format(item, name) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: without_format(value, name) for key, value in schema.items()
            if not (key == "format" and value == name)}


def grammar_text(constraint: Constraint) -> str:
    """The llguidance grammar of a constraint (cached by its key); a malformed definition is an
    InvalidRequestError."""
    try:
        return _grammar_for_key(constraint.key)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidRequestError(f"The {_KIND_NAMES[constraint.kind]} in {constraint.param} is malformed: "
                                  f"{exc}.", param=constraint.param) from None


def _lark(llg: Any, grammar: str) -> str:
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        lark = any_to_lark(grammar)
    except Exception as exc:  # noqa: BLE001 - the converter raises several kinds for a malformed GBNF grammar
        raise ValueError(f"it is neither Lark nor valid GBNF ({exc})") from None
    return llg.LLMatcher.grammar_from_lark(lark)


def _structural_tag(llg: Any, tag_json: str) -> str:
    """vLLM's (legacy) structural tag: ``{"structures": [{"begin", "schema", "end"}], "triggers": [...]}``."""
    spec = json.loads(tag_json)
    structures = spec.get("structures") if isinstance(spec, dict) else None
    triggers = spec.get("triggers") if isinstance(spec, dict) else None
    if not isinstance(structures, list) or not structures or not isinstance(triggers, list) or not triggers:
        raise ValueError("it needs 'structures' (begin, schema, end) and 'triggers' (the format with 'format' "
                         "objects is not supported)")
    tags = []
    for item in structures:
        begin = item.get("begin", "")
        trigger = next((t for t in triggers if begin.startswith(t)), None)
        if trigger is None:
            raise ValueError(f"the begin {begin!r} starts with none of the triggers")
        tags.append(llg.StructTag(trigger=trigger, begin=begin, grammar=item.get("schema") or {}, end=item["end"]))
    return llg.StructTag.to_grammar(tags)


def closed_objects(schema: Any) -> Any:
    """A copy of ``schema`` where every object schema that does not say otherwise forbids other properties."""
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: closed_objects(value) for key, value in schema.items()}
    if (closed.get("type") == "object" or "properties" in closed) and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


class TokenizerGrammars:
    """Grammars compiled for one tokenizer: the cache, each request's matcher, and the batched mask fill.

    ``tokenizer`` is an ``llguidance.LLTokenizer`` (see :func:`from_hf_tokenizer`); ``vocab_size`` is the width
    of the model's logits (it may exceed the tokenizer's; the extra ids are never allowed)."""

    def __init__(self, tokenizer: Any, vocab_size: int, threads: int | None = None) -> None:
        llg = llguidance()
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.threads = threads or max(1, os.cpu_count() or 1)
        self._executor = llg.LLExecutor(num_threads=self.threads)
        self._compiled: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._token_bytes: list[bytes] | None = None
        self.marker_tables: dict[bytes, Any] = {}  # reasoning end markers' tables (structured.guide)

    def matcher(self, constraint: Constraint) -> Any:
        """A fresh matcher for one request (a copy of the cached compiled grammar)."""
        with self._lock:
            template = self._compiled.get(constraint.key)
            if template is None:
                template = self._compile(constraint)
                self._compiled[constraint.key] = template
                if len(self._compiled) > CACHE_SIZE:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(constraint.key)
            return template.deep_copy()

    def _compile(self, constraint: Constraint) -> Any:
        matcher = llguidance().LLMatcher(self.tokenizer, grammar_text(constraint), log_level=0)
        if matcher.is_error():
            raise InvalidRequestError(f"The {_KIND_NAMES[constraint.kind]} in {constraint.param} cannot be "
                                      f"enforced: {matcher.get_error()}", param=constraint.param)
        return matcher

    @property
    def cache_size(self) -> int:
        return len(self._compiled)

    def fill(self, matchers: list[tuple[Any, int]], bitmask: Any) -> None:
        """Fill row ``i`` of ``bitmask`` (int32 [rows, ceil(vocab / 32)], contiguous, CPU) with the mask of each
        ``(matcher, i)``; several matchers in parallel on ``threads`` threads."""
        pointer, row_bytes = bitmask.data_ptr(), bitmask.shape[1] * 4
        if len(matchers) == 1:
            matcher, row = matchers[0]
            matcher.unsafe_compute_mask_ptr(pointer + row * row_bytes, row_bytes)
        else:
            self._executor.unsafe_compute_mask_ptr(matchers, pointer, row_bytes, bitmask.shape[0])

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.tokenize_str(text)

    @property
    def token_bytes(self) -> list[bytes]:
        """Each token id's bytes (special tokens as their text), built once (for the reasoning gate)."""
        if self._token_bytes is None:
            size = self.tokenizer.vocab_size
            self._token_bytes = [self.tokenizer.decode_bytes([i]) for i in range(size)]
            self._token_bytes += [b""] * max(0, self.vocab_size - size)
        return self._token_bytes


def from_hf_tokenizer(tokenizer: Any, vocab_size: int) -> TokenizerGrammars:
    """Grammars for a transformers tokenizer (a fast one; ~1 s to build, once per engine)."""
    llguidance()  # installed, or the install command
    from llguidance.hf import from_tokenizer

    try:
        lltokenizer = from_tokenizer(tokenizer, n_vocab=vocab_size)
    except Exception as exc:  # noqa: BLE001 - e.g. a slow (non-Rust) tokenizer
        raise InvalidRequestError(f"Structured output needs a fast (tokenizers) tokenizer; this one cannot be "
                                  f"used: {exc}") from None
    return TokenizerGrammars(lltokenizer, vocab_size)
