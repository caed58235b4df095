"""The reasoning gate of structured output on vLLM: a reasoning model's constraint applies after its reasoning.

vLLM gates constraints with a reasoning parser of its own, chosen when the engine starts
(``structured_outputs_config.reasoning_parser``). lmchat picks it there from the reasoning parser of the template
the facade will use (the named ``template``'s, else the one the model's own chat template calls for), mapped to
vLLM's parser of the same markup. Per request, the engine tells vLLM where the answer starts
(``reasoning_ended``): after the reasoning when the prompt opened it, from the first token when the request has no
reasoning gate. A gate the started parser cannot honour (no vLLM parser maps, another template's markers) is an
UnsupportedError, never an unconstrained answer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmchat.errors import LmchatError, UnsupportedError
from lmchat.structured.constraint import Constraint

logger = logging.getLogger("lmchat.engines.vllm")

# lmchat's reasoning parser classes -> vLLM's parser of the same markup (vLLM 0.32's names)
VLLM_REASONING_PARSERS = {
    "ThinkReasoningParser": "qwen3",  # <think> ... </think>, each one token
    "GraniteReasoningParser": "granite",
    "HunyuanReasoningParser": "hunyuan_a13b",
    "SeedOssReasoningParser": "seed_oss",
    "HarmonyReasoningParser": "openai_gptoss",
}


@dataclass(frozen=True)
class ReasoningSetup:
    """The reasoning parser vLLM's structured outputs were started with (``vllm_parser``; None: none), the end
    markers of lmchat's parser it stands for (None: the user chose vLLM's parser, taken as fitting), and why there
    is none."""

    vllm_parser: str | None = None
    end_markers: tuple[str, ...] | None = None
    why_not: str = "the template has no reasoning parser"

    def reasoning_ended(self, constraint: Constraint | None) -> bool | None:
        """vLLM's ``reasoning_ended`` for a request (None: leave it to vLLM's parser, which reads the prompt)."""
        if constraint is None or self.vllm_parser is None and constraint.reasoning is None:
            return None
        gate = constraint.reasoning
        if gate is None:
            return True  # no reasoning before this answer (the prompt closed it, or no parser): constrain at once
        if self.vllm_parser is None:
            raise UnsupportedError(
                f"{constraint.param} constrains a reasoning model's answer after its reasoning, which the vllm engine "
                f"cannot do here: {self.why_not}. Start it with vllm_config: {{\"structured_outputs_config\": "
                "{\"reasoning_parser\": NAME}} naming vLLM's parser for this model, or use the huggingface engine.",
                param=constraint.param)
        if self.end_markers is not None and not set(gate.end_markers) & set(self.end_markers):
            raise UnsupportedError(
                f"{constraint.param}: this request's template ends its reasoning with {', '.join(gate.end_markers)}, "
                f"but vLLM's structured outputs were started for the template's parser '{self.vllm_parser}'; use "
                "the model's template, or the huggingface engine.", param=constraint.param)
        return False if gate.in_reasoning else None


def reasoning_setup(config: Any, kwargs: dict[str, Any]) -> ReasoningSetup:
    """Choose vLLM's structured-outputs reasoning parser (added to ``kwargs``, the engine arguments, in place)
    unless the user's ``structured_outputs_config`` names one."""
    chosen = kwargs.get("structured_outputs_config")
    if isinstance(chosen, dict) and chosen.get("reasoning_parser") or getattr(chosen, "reasoning_parser", None):
        name = chosen["reasoning_parser"] if isinstance(chosen, dict) else chosen.reasoning_parser
        return ReasoningSetup(name, None)
    try:
        lmchat_parser = template_reasoning_parser(config)
    except (LmchatError, OSError, ValueError) as exc:  # (vLLM names a model it cannot read itself, at start)
        return ReasoningSetup(why_not=f"its template could not be read ({exc})")
    if lmchat_parser is None:
        return ReasoningSetup()
    from lmchat.parsing import get_reasoning_parser
    from lmchat.structured.gate import reasoning_gate

    vllm_parser = VLLM_REASONING_PARSERS.get(get_reasoning_parser(lmchat_parser).__name__)
    if vllm_parser is None:
        return ReasoningSetup(why_not=f"vLLM has no reasoning parser for lmchat's '{lmchat_parser}'")
    why = _parser_fails(vllm_parser, config)
    if why:
        return ReasoningSetup(why_not=f"vLLM's '{vllm_parser}' parser cannot read this tokenizer ({why})")
    if chosen is None:
        kwargs["structured_outputs_config"] = {"reasoning_parser": vllm_parser}
    elif isinstance(chosen, dict):
        kwargs["structured_outputs_config"] = {**chosen, "reasoning_parser": vllm_parser}
    else:
        return ReasoningSetup(why_not="vllm_config's structured_outputs_config names no reasoning_parser")
    return ReasoningSetup(vllm_parser, reasoning_gate(lmchat_parser, "", True).end_markers)


def template_reasoning_parser(config: Any) -> str | None:
    """lmchat's reasoning parser for the template the facade will use (as :func:`plan_parsing` decides it)."""
    from lmchat.templates.detect import detect_reasoning_parser
    from lmchat.templates.registry import resolve_template

    if config.template:
        template = resolve_template(config.template, tool_format=config.tool_format)
        return template.reasoning_parser if template.named else detect_reasoning_parser(template.source)
    source = _model_chat_template(config)
    return detect_reasoning_parser(source) if source else None


def _model_chat_template(config: Any) -> str | None:
    """The checkpoint's own chat template (``chat_template.jinja``, else ``tokenizer_config.json``'s)."""
    from transformers.utils import cached_file

    hub = {"revision": config.model_revision, "cache_dir": config.cache_dir}
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        path = cached_file(config.model_name_or_path, name, _raise_exceptions_for_missing_entries=False, **hub)
        if path is None:
            continue
        text = Path(path).read_text(encoding="utf-8")
        if name.endswith(".jinja"):
            return text
        template = json.loads(text).get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        return template if isinstance(template, str) else None
    return None


def _parser_fails(vllm_parser: str, config: Any) -> str | None:
    """Why vLLM's parser cannot be built on the model's tokenizer (its markers are no single tokens), else None:
    vLLM builds it inside its engine process, where a failure would end the engine."""
    from transformers import AutoTokenizer
    from vllm.reasoning import ReasoningParserManager

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path, revision=config.model_revision,
                                                  cache_dir=config.cache_dir,
                                                  trust_remote_code=config.trust_remote_code)
        ReasoningParserManager.get_reasoning_parser(vllm_parser)(tokenizer)
    except Exception as exc:  # noqa: BLE001 - any failure means vLLM's parser cannot run on this model
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None
