"""Structured output: constrained decoding to JSON, a JSON schema, a regex, a choice, a grammar or structural tags,
and forced tool calls.

``constraint.py`` is the typed request (:class:`Constraint`, carried in ``SamplingParams.constraint``);
``requests.py`` reads every request form into it, ``tool_choice.py`` the forced calls; ``gate.py`` says where a
reasoning model's constraint starts. The facade checks a constraint once (``backend.check``); our engines enforce
it with ``backend.TokenizerGrammars`` (compiled-grammar cache, batched mask fill), ``guide.Guide`` (one request's
state) and ``masks.StepMasks`` (one decode step's masks on the logits); vLLM maps it to its own structured outputs.
Only ``constraint.py`` is imported with the facade; the grammar library (llguidance) loads when a constraint is
first checked.
"""

from lmchat.structured.constraint import Constraint, ConstraintKind, ReasoningGate

ALL_KINDS = frozenset({"json_object", "json_schema", "regex", "choice", "grammar", "structural_tag"})

__all__ = ["ALL_KINDS", "Constraint", "ConstraintKind", "ReasoningGate"]
