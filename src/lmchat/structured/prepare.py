"""The facade's one step for structured output: take the request's fields, decide the constraint and the forced
tool call, and check them (before any engine work; every problem is an InvalidRequestError / 400)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmchat.errors import InvalidRequestError
from lmchat.structured.constraint import Constraint
from lmchat.structured.tool_choice import ToolChoice, resolve_tool_choice

if TYPE_CHECKING:
    from lmchat.engines.base import BaseEngine
    from lmchat.generation.sampling import SamplingParams


@dataclass(frozen=True)
class StructuredRequest:
    """A request's structured-output fields, read once: the constraint (from the output-format fields or from a
    forced tool call) and what ``tool_choice`` decided."""

    constraint: Constraint | None
    tool_choice: ToolChoice

    @classmethod
    def of(cls, constraint: Constraint | None, tools: list[dict[str, Any]] | None = None, tool_choice: Any = None,
           parallel_tool_calls: Any = None) -> StructuredRequest:
        """The request's constraint (from :func:`lmchat.structured.requests.pop_constraint`) and its tool choice
        (``tools``: normalised OpenAI function tools)."""
        choice = resolve_tool_choice(tools, tool_choice, parallel_tool_calls)
        if constraint is not None and choice.constraint is not None:
            raise InvalidRequestError(f"tool_choice forces a tool call, so the answer cannot also follow "
                                      f"{constraint.param}; send one of them.", param=constraint.param)
        return cls(constraint or choice.constraint, choice)

    @property
    def prompt_tools(self) -> list[dict[str, Any]] | None:
        return self.tool_choice.prompt_tools

    def parsing_changes(self) -> dict[str, Any]:
        """What a forced call changes in the parsing plan: its own parser, or at most one call."""
        choice = self.tool_choice
        if choice.parser is not None:
            return {"tool_parser": choice.parser, "tools": choice.parser_tools, "max_tool_calls": None}
        return {} if choice.parallel_tool_calls else {"max_tool_calls": 1}

    def constrain(self, params: SamplingParams, engine: BaseEngine, prompt: str, reasoning_parser: str | None = None,
                  starts_in_reasoning: bool = False) -> SamplingParams:
        """``params`` with the checked constraint (None: unchanged). The constraint starts after the reasoning of
        the request's reasoning parser."""
        constraint = self.constraint
        if params.constraint is not None:
            if constraint is not None:
                raise InvalidRequestError(f"constraint and {constraint.param} both constrain the answer; give one.",
                                          param=constraint.param)
            constraint = params.constraint
        if constraint is None:
            return params
        if params.stop:
            raise InvalidRequestError(f"stop strings cannot be combined with {constraint.param}: a stop string "
                                      "could cut the answer before it matches; leave stop out (the answer ends "
                                      "when the constraint is complete).", param="stop")
        engine.capabilities.check_constraint(constraint, engine.label or engine.name)
        from lmchat.structured.backend import check
        from lmchat.structured.gate import reasoning_gate

        constraint = constraint.model_copy(
            update={"reasoning": reasoning_gate(reasoning_parser, prompt, starts_in_reasoning)})
        check(constraint)
        return params.model_copy(update={"constraint": constraint})
