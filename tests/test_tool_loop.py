"""The official openai client's tool-calling loop end to end (streamed and not), and tool prompts rendered by a
tiny real model through every named template that has a tool format."""

from __future__ import annotations

import json

import pytest
from test_server_support import ThreadServer, engine_log, write_script

from lmchat import ChatModel
from lmchat.templates import resolve_template, template_names
from lmchat.templates.registry import template_spec

TOOLS = [{"type": "function", "function": {"name": "get_temperature", "description": "Temperature in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
CALL = '<tool_call>\n{"name": "get_temperature", "arguments": {"city": "Paris"}}\n</tool_call>'
FINAL = "It is 22 degrees in Paris."


def get_temperature(city: str) -> str:
    return json.dumps({"city": city, "celsius": 22})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # The fake engine answers with the final text once the prompt holds a tool result, else it calls the tool.
    script = write_script(tmp_path_factory.mktemp("tool-loop"), name="fake-model",
                          replies=[{"match": "<tool_response>", "text": FINAL}, CALL])
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script, "template": "qwen"}) as live:
        live.script = script
        yield live


def collect_stream(stream):
    """Fold a streamed answer (content and delta.tool_calls) the way OpenAI's own examples do."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for piece in choice.delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            call["name"] += piece.function.name or ""
            call["arguments"] += piece.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("stream", [False, True])
def test_openai_client_tool_loop(server, stream):
    client = server.openai()
    messages = [{"role": "user", "content": "How warm is it in Paris?"}]
    first = client.chat.completions.create(model="fake-model", messages=messages, tools=TOOLS, stream=stream)
    if stream:
        content, calls, finish = collect_stream(first)
    else:
        message = first.choices[0].message
        content, finish = message.content, first.choices[0].finish_reason
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls]
    assert finish == "tool_calls" and not content
    [call] = calls
    assert call["name"] == "get_temperature"
    result = get_temperature(**json.loads(call["arguments"]))

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": result},
    ]
    second = client.chat.completions.create(model="fake-model", messages=messages, tools=TOOLS, stream=stream)
    if stream:
        content, calls, finish = collect_stream(second)
    else:
        content, calls, finish = second.choices[0].message.content, second.choices[0].message.tool_calls, \
            second.choices[0].finish_reason
    assert (content, finish) == (FINAL, "stop") and not calls
    prompt = [e for e in engine_log(server.script) if e["event"] == "request"][-1]["prompt"]
    assert f"<tool_response>\n{result}\n</tool_response>" in prompt  # the tool result reached the model as rendered
    assert '"arguments": {"city": "Paris"}' in prompt  # the earlier call, arguments as an object


def _tool_templates() -> list[str]:
    """Every Jinja-file template with a tool format, and one LLaMA-Factory template per tool format (the others of a
    format render tools through the same macro; test_templates_llamafactory.py checks them without a model)."""
    names, formats = [], set()
    for name in template_names():
        spec = template_spec(name)
        if not resolve_template(name).tool_parser:
            continue
        if spec.slots is None or spec.slots.tool_format not in formats:
            names.append(name)
            formats.add(spec.slots.tool_format if spec.slots else None)
    return names


TOOL_TEMPLATES = _tool_templates()


@pytest.mark.parametrize("template", TOOL_TEMPLATES)
def test_tiny_model_renders_tool_prompts_through_each_named_template(template, tiny_model_dir):
    pytest.importorskip("torch")
    args = {"model_name_or_path": str(tiny_model_dir), "template": template, "do_sample": False,
            "max_new_tokens": 4}
    messages = [{"role": "system", "content": "You can call tools."},
                {"role": "user", "content": "How warm is it in Paris?"}]
    with ChatModel(args) as model:
        prepared = model.prepare(messages, tools=TOOLS)
        [response] = model.chat(messages, tools=TOOLS)
    assert "get_temperature" in prepared.prompt  # tools are never dropped
    if template in ("deepseek3-official", "deepseekr1-official"):  # DeepSeek's official template never lists tools:
        assert "> Tool Name: get_temperature" in prepared.prompt  # as LLaMA-Factory, its default tool prompt does
        assert prepared.parsing.tool_parser == "default"
    else:
        assert prepared.parsing.tool_parser == resolve_template(template).tool_parser
    assert response.prompt_length == len(prepared.prompt_token_ids) and response.response_length == 4
