"""Tools are never dropped: a chat template that ignores them gets LLaMA-Factory's default tool prompt (and its
ReAct parser), as LLaMA-Factory does with such a template; a configured parser that cannot read that format is a
400 saying how to choose a template that renders tools."""

from __future__ import annotations

import json

import pytest
from test_server_support import ThreadServer, assert_error, write_script

from lmchat import ChatModel
from lmchat.errors import UnsupportedError
from lmchat.templates.registry import ChatTemplate, resolve_template
from lmchat.templates.render import render_prompt
from lmchat.templates.tool_fallback import default_tool_prompt, find_default_system, reads_tools, render_chat

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "The city."},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "array", "items": {"type": "integer"}}}}}}]
# LLaMA-Factory's DefaultToolUtils.tool_formatter(TOOLS), written out from its code
EXPECTED_TOOL_TEXT = (
    "You have access to the following tools:\n"
    "> Tool Name: get_weather\nTool Description: Weather of a city.\nTool Args:\n"
    "  - city (string, required): The city.\n"
    "  - unit (string): , should be one of [c, f]\n"
    "  - days (array): , where each item should be integer\n\n"
    "Use the following format if using a tool:\n```\n"
    "Action: tool name (one of [get_weather])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    '(e.g. ```{"input": "hello world", "num_beams": 5}```)\n```\n'
)
CALL = "Action: get_weather\nAction Input: {\"city\": \"Paris\"}"
USER = [{"role": "user", "content": "Weather in Paris?"}]
NO_TOOLS = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}<|assistant|>\n"


def _model(tmp_path, **script) -> ChatModel:
    script.setdefault("name", "fake-model")
    return ChatModel({"infer_backend": "fake", "model_name_or_path": write_script(tmp_path, **script)})


def test_the_default_tool_prompt_is_llamafactorys():
    assert default_tool_prompt(TOOLS) == EXPECTED_TOOL_TEXT
    named = render_prompt([{"role": "user", "content": "x"}], resolve_template("default"), tools=TOOLS)
    assert named.startswith("System: " + EXPECTED_TOOL_TEXT)  # the same text as the named "default" template


def test_a_template_that_ignores_tools_gets_them_in_its_system_turn(tmp_path):
    with _model(tmp_path, chat_template=NO_TOOLS, replies=[CALL]) as model:
        without = model.prepare(USER)
        prepared = model.prepare([{"role": "system", "content": "Be brief."}, *USER], tools=TOOLS)
        assert prepared.prompt.startswith(f"<|system|>\nBe brief.{EXPECTED_TOOL_TEXT}<|end|>\n")
        assert prepared.prompt_tokens > without.prompt_tokens + 50
        assert prepared.parsing.tool_parser == "default"
        [answer] = model.chat(USER, tools=TOOLS)
    assert answer.finish_reason == "tool_calls" and not answer.content
    assert [(call.name, json.loads(call.arguments)) for call in answer.tool_calls] == [
        ("get_weather", {"city": "Paris"})]


def test_earlier_calls_and_results_are_written_in_the_same_format(tmp_path):
    conversation = [*USER,
                    {"role": "assistant", "content": "Let me look.", "tool_calls": [
                        {"id": "c1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    with _model(tmp_path, chat_template=NO_TOOLS) as model:
        prompt = model.prepare(conversation, tools=TOOLS).prompt
    assert prompt.startswith(f"<|system|>\n{EXPECTED_TOOL_TEXT}<|end|>\n<|user|>\nWeather in Paris?<|end|>\n")
    assert prompt.endswith(f"<|assistant|>\nLet me look.\n{CALL}<|end|>\n<|user|>\nsunny<|end|>\n<|assistant|>")


def test_a_template_that_renders_tools_is_used_as_it_is(tmp_path):
    template = "{% if tools %}[{{ tools | map(attribute='function') | map(attribute='name') | join(',') }}]{% endif %}" \
               + NO_TOOLS
    with _model(tmp_path, chat_template=template) as model:
        prepared = model.prepare(USER, tools=TOOLS)
    assert prepared.prompt.startswith("[get_weather]<|user|>") and "Tool Name" not in prepared.prompt
    assert prepared.parsing.tool_parser != "default"


def test_a_template_that_reads_tools_but_drops_them_here_is_caught():
    template = ChatTemplate("odd", "{% if tools and messages[0]['role'] == 'system' %}T{% endif %}" + NO_TOOLS)
    assert reads_tools(template.source)
    assert render_chat(USER, template, tools=TOOLS, special_tokens={}).tool_fallback
    assert not render_chat([{"role": "system", "content": "s"}, *USER], template, tools=TOOLS,
                           special_tokens={}).tool_fallback


def test_the_templates_own_default_system_prompt_is_kept():
    template = ChatTemplate("persona", (
        "{% if messages[0]['role'] != 'system' %}<system>\nI am Bot.</system>\n{% endif %}"
        "{% for m in messages %}<{{ m['role'] }}>\n{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"))
    assert find_default_system(template, {}) == "I am Bot."
    rendered = render_chat(USER, template, tools=TOOLS, special_tokens={})
    assert rendered.prompt.startswith(f"<system>\nI am Bot.{EXPECTED_TOOL_TEXT}</system>\n<user>\n")
    assert find_default_system(ChatTemplate("plain", NO_TOOLS), {}) == ""


def test_a_configured_parser_that_cannot_read_the_fallback_is_a_clear_error(tmp_path):
    path = write_script(tmp_path, name="fake-model", chat_template=NO_TOOLS)
    with ChatModel({"infer_backend": "fake", "model_name_or_path": path, "tool_parser": "hermes"}) as model:
        with pytest.raises(UnsupportedError, match="ignores tools") as caught:
            model.prepare(USER, tools=TOOLS)
        assert "template: qwen3" in caught.value.message and "tool_parser: default" in caught.value.message
        assert caught.value.param == "tools"
        model.prepare(USER)  # without tools nothing changes
        model.prepare(USER, tools=TOOLS, tool_choice="none")


def test_through_the_server_tools_reach_the_prompt_and_tokenize_counts_them(tmp_path):
    script = write_script(tmp_path, name="fake-model", chat_template=NO_TOOLS, replies=[CALL])
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}) as server, server.http() as http:
        counts = [http.post("/tokenize", json={"messages": USER, **extra}).json()["count"]
                  for extra in ({}, {"tools": TOOLS})]
        assert counts[1] > counts[0] + 50
        answer = http.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS}).json()
        [call] = answer["choices"][0]["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather" and answer["choices"][0]["finish_reason"] == "tool_calls"
    hermes = {"infer_backend": "fake", "model_name_or_path": script, "tool_parser": "hermes"}
    with ThreadServer(hermes) as server, server.http() as http:
        error = assert_error(http.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS}), 400,
                             param="tools", code="unsupported_parameter")
        assert "ignores tools" in error["message"]


def test_smollm2s_own_template_gets_the_tools_and_keeps_its_persona(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "max_new_tokens": 2}) as model:
        plain = model.prepare(USER)
        prepared = model.prepare(USER, tools=TOOLS)
    assert prepared.prompt_tokens > plain.prompt_tokens + 50  # the issue: the same count with and without tools
    assert prepared.prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                                      "Hugging Face" + EXPECTED_TOOL_TEXT + "<|im_end|>\n")
    assert prepared.parsing.tool_parser == "default"
