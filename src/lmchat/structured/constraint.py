"""The typed structured-output request: what the answer must match, whatever request field asked for it.

Every form a client may use (OpenAI's ``response_format``, vLLM's ``structured_outputs`` and older ``guided_*``
fields, llama.cpp's ``grammar``/``json_schema``, ``tool_choice`` required or named) becomes one
:class:`Constraint` (``requests.py``), checked once by the facade and carried in ``SamplingParams.constraint``.
Engines enforce it: ours with the grammar library's token masks (``backend.py``, ``guide.py``), vLLM with its own
structured outputs. No torch, no grammar library imported here.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

ConstraintKind = Literal["json_object", "json_schema", "regex", "choice", "grammar", "structural_tag"]
GrammarSyntax = Literal["gbnf", "lark"]

# Which field each kind reads its definition from (json_object needs none).
_FIELD_OF_KIND = {"json_schema": "json_schema", "regex": "regex", "choice": "choices", "grammar": "grammar",
                  "structural_tag": "structural_tag"}


class ReasoningGate(BaseModel):
    """Where a reasoning model's answer leaves its reasoning: the constraint applies only after that.

    ``in_reasoning``: the prompt opened the reasoning, so the answer starts inside it. Otherwise the answer may open
    it with one of ``start_markers`` (only as its very first token) and the constraint applies from the start if
    it does not. The reasoning ends at the first of ``end_markers``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    end_markers: tuple[str, ...]
    start_markers: tuple[str, ...] = ()
    in_reasoning: bool = False


class Constraint(BaseModel):
    """What the answer (after any reasoning) must match. One kind, with its definition in one field:

    * ``json_object``: any JSON object; ``json_schema``: JSON valid against ``json_schema`` (JSON text);
    * ``regex``: the whole answer matches ``regex``; ``choice``: the answer is one of ``choices``;
    * ``grammar``: ``grammar`` in ``grammar_syntax`` (GBNF, as llama.cpp and vLLM take it, or Lark);
    * ``structural_tag``: ``structural_tag``, vLLM's/xgrammar's structural-tag JSON (free text, with tagged
      regions constrained).

    ``param`` names the request field it came from, for error messages; it is not part of :attr:`key`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ConstraintKind
    json_schema: str | None = None
    regex: str | None = None
    choices: tuple[str, ...] = ()
    grammar: str | None = None
    grammar_syntax: GrammarSyntax = "gbnf"
    structural_tag: str | None = None
    whitespace_flexible: bool = True
    """Any JSON whitespace between tokens (False: none, the compact form)."""
    whitespace_pattern: str | None = None
    """A regex for the whitespace JSON may hold between tokens (vLLM's whitespace_pattern)."""
    additional_properties: bool = True
    """False: objects may hold only the properties their schema names (vLLM's disable_additional_properties)."""
    param: str = "response_format"
    reasoning: ReasoningGate | None = None

    @model_validator(mode="after")
    def _one_definition(self) -> Constraint:
        field = _FIELD_OF_KIND.get(self.kind)
        for name in set(_FIELD_OF_KIND.values()) - {field}:
            if getattr(self, name):
                raise ValueError(f"a {self.kind} constraint takes no {name}")
        if field is not None and not getattr(self, field):
            raise ValueError(f"a {self.kind} constraint needs {field}")
        return self

    @classmethod
    def from_schema(cls, schema: Any, **fields: Any) -> Constraint:
        """A ``json_schema`` constraint from a schema object (dict) or its JSON text."""
        text = schema if isinstance(schema, str) else json.dumps(schema, ensure_ascii=False)
        return cls(kind="json_schema", json_schema=text, **fields)

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema as an object (``json_schema`` constraints only)."""
        return json.loads(self.json_schema) if self.json_schema is not None else None

    @property
    def key(self) -> tuple[Any, ...]:
        """What the compiled grammar depends on (the cache key, with the tokenizer)."""
        return (self.kind, self.json_schema, self.regex, self.choices, self.grammar, self.grammar_syntax,
                self.structural_tag, self.whitespace_flexible, self.whitespace_pattern, self.additional_properties)

    def describe(self) -> str:
        """A short description for logs and messages."""
        detail = {"json_object": "", "json_schema": f" ({len(self.json_schema or '')} chars)",
                  "regex": f" {self.regex!r}", "choice": f" of {len(self.choices)}",
                  "grammar": f" ({self.grammar_syntax})", "structural_tag": ""}[self.kind]
        return f"{self.kind}{detail}"
