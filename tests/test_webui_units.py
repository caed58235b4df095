"""The web chat's pieces without a browser: conversation edits, file round trip, display, answering with stop."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import pytest
from conftest import read_engine_log

from lmchat.chat.chat_model import ChatModel
from lmchat.chat.response import ChatChunk
from lmchat.errors import InvalidRequestError, LmchatError
from lmchat.parsing.types import ToolCallDelta
from lmchat.webui import conversation as conv
from lmchat.webui.answer import AnswerBuilder
from lmchat.webui.cli import _auth, _environment_defaults, add_arguments
from lmchat.webui.display import chatbot_messages, conversation_index
from lmchat.webui.generate import Answerer, Options
from lmchat.webui.transfer import export_conversation, import_conversation

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
OPTIONS = Options(temperature=0.5, top_p=0.9, top_k=5, max_new_tokens=64)


def test_user_message_with_files_uses_openai_parts(tmp_path):
    message = conv.user_message(" two pictures ", ["/x/a.png", "/x/b.JPG", "/x/c.mp4"])
    assert message["content"] == [
        {"type": "text", "text": "two pictures"},
        {"type": "image_url", "image_url": {"url": "/x/a.png"}},
        {"type": "image_url", "image_url": {"url": "/x/b.JPG"}},
        {"type": "video_url", "video_url": {"url": "/x/c.mp4"}},
    ]
    assert conv.conversation_media([message]) == {"images": ["/x/a.png", "/x/b.JPG"], "videos": ["/x/c.mp4"],
                                                  "audios": []}
    assert conv.user_message("plain") == {"role": "user", "content": "plain"}
    with pytest.raises(InvalidRequestError, match="Type a message"):
        conv.user_message("  ")
    with pytest.raises(InvalidRequestError, match="not an image"):
        conv.user_message("x", ["/x/notes.txt"])


def test_undo_regenerate_and_edit_touch_only_the_last_turn():
    messages = [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "A"},
        {"role": "user", "content": "b"}, {"role": "assistant", "content": "B"},
    ]
    kept, removed = conv.undo_last_turn(messages)
    assert kept == messages[:2] and removed == {"role": "user", "content": "b"}
    assert conv.truncate_for_regenerate(messages) == messages[:3]
    assert conv.edit_user_message(messages, 2, "b2") == [*messages[:2], {"role": "user", "content": "b2"}]
    assert messages[3] == {"role": "assistant", "content": "B"}  # the caller's list is untouched
    with pytest.raises(InvalidRequestError):
        conv.edit_user_message(messages, 1, "x")
    with pytest.raises(InvalidRequestError):
        conv.truncate_for_regenerate([{"role": "assistant", "content": "hi"}])
    assert conv.undo_last_turn([]) == ([], None)


def test_tool_results_answer_pending_calls_in_order():
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "call_2"}]}]
    assert not conv.can_answer(messages)
    once = conv.add_tool_result(messages, "sunny")
    assert once[-1] == {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"}
    assert not conv.can_answer(once)
    twice = conv.add_tool_result(once, "rainy")
    assert twice[-1]["tool_call_id"] == "call_2" and conv.can_answer(twice)
    with pytest.raises(InvalidRequestError, match="No tool call is waiting"):
        conv.add_tool_result(twice, "more")


def test_download_embeds_media_and_upload_restores_everything(tmp_path):
    image = tmp_path / "dot.png"
    image.write_bytes(b"\x89PNG fake bytes")
    messages = [conv.user_message("look", [str(image)]),
                {"role": "assistant", "content": "", "tool_calls": [CALL], "reasoning_content": "hmm"},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    tools = json.dumps([{"name": "get_weather", "parameters": {"type": "object"}}])
    body = export_conversation(messages, "Be brief.", tools, "m")
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["tools"] == [{"type": "function", "function": {"name": "get_weather",
                                                                "parameters": {"type": "object"}}}]
    restored, system, tools_json = import_conversation(json.loads(json.dumps(body)), tmp_path / "media")
    assert system == "Be brief." and json.loads(tools_json) == body["tools"]
    restored_image = restored[0]["content"][1]["image_url"]["url"]
    assert Path(restored_image).read_bytes() == image.read_bytes()
    assert restored[1:] == messages[1:]
    assert import_conversation([{"role": "user", "content": "hi"}], tmp_path)[0] == [{"role": "user", "content": "hi"}]
    with pytest.raises(InvalidRequestError):
        import_conversation({"nothing": 1}, tmp_path)


@pytest.mark.parametrize("url", ["/etc/passwd", "file:///etc/hostname", "../secret.png", "C:\\photo.png"])
def test_an_uploaded_file_cannot_name_a_local_path(tmp_path, url):
    """The uploaded JSON comes from the browser: a media part naming a path of the server's machine would let the
    model read it and Download JSON embed it, so it is refused, naming the part; nothing is written."""
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "see"},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]}
    with pytest.raises(InvalidRequestError, match=r"content\[1\]\.image_url names .*never as paths"):
        import_conversation(body, tmp_path / "media")
    assert not (tmp_path / "media").exists()
    kept = {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                       "image_url": {"url": "https://example.com/a.png"}}]}]}
    assert import_conversation(kept, tmp_path / "media")[0][0]["content"][0]["image_url"]["url"] == \
        "https://example.com/a.png"  # fetched later under the media fetch guard
    with pytest.raises(InvalidRequestError, match="has no 'url' string"):
        import_conversation({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, tmp_path)


def test_display_shows_blocks_and_maps_back_to_the_conversation():
    messages = [conv.user_message("q", ["/x/a.png"]),
                {"role": "assistant", "content": "answer", "reasoning_content": "think", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"}]
    shown, origins = chatbot_messages(messages, notice="boom")
    assert shown[0] == {"role": "user", "content": ["q", {"path": "/x/a.png"}]}
    assert shown[1]["metadata"] == {"title": "Reasoning", "status": "done"}
    assert shown[2] == {"role": "assistant", "content": "answer"}
    assert shown[3]["metadata"]["title"] == "Tool call: get_weather" and '"city": "Paris"' in shown[3]["content"]
    assert shown[4]["metadata"]["title"] == "Tool result: get_weather"
    assert "boom" in shown[5]["content"] and origins == [0, 1, 1, 1, 2, -1]
    assert conversation_index(messages, 3) == 1 and conversation_index(messages, (4, 0)) == 2


def test_answer_builder_folds_chunks():
    answer = AnswerBuilder()
    answer.feed(ChatChunk(0, text="<think>x", reasoning="x"))
    answer.feed(ChatChunk(0, text="hi", content="hi", tool_calls=(ToolCallDelta(0, "c1", "f", '{"a":'),)))
    answer.feed(ChatChunk(0, tool_calls=(ToolCallDelta(0, arguments=" 1}"),), finish_reason="tool_calls",
                          prompt_tokens=4, completion_tokens=6))
    assert answer.message() == {"role": "assistant", "content": "hi", "reasoning_content": "x", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    assert answer.stats().startswith("6 tokens ·") and answer.stats().endswith("finish: tool_calls")


@pytest.fixture
def fake_model(fake_script):
    def make(**script):
        return ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(**script)})
    return make


def test_answerer_streams_and_passes_the_controls(fake_model):
    with fake_model(replies=["one two three"]) as model:
        options = Options(0.5, 0.9, 5, 64, seed=" 7 ")
        progress = list(Answerer(model).stream("s", [{"role": "user", "content": "hi"}], "Sys", "", options))
        final = progress[-1]
        assert final.done and final.messages[-1] == {"role": "assistant", "content": "one two three"}
        assert "finish: stop" in final.stats
        request = next(e for e in read_engine_log(model.config.model_name_or_path) if e["event"] == "request")
        assert request["params"]["seed"] == 7 and request["params"]["top_k"] == 5
        assert request["prompt"].startswith("<|system|>\nSys")


def test_answerer_turns_errors_into_notices(fake_model):
    with fake_model(replies=["a b"]) as model:
        answerer = Answerer(model)
        question = [conv.user_message("see", ["/x/a.png", "/x/b.png"])]
        final = list(answerer.stream("s", question, "", "", OPTIONS))[-1]
        assert final.done and "does not accept images" in final.notice and final.messages == question
        bad_seed = Options(0.5, 0.9, 5, 64, seed="abc")
        final = list(answerer.stream("s", [{"role": "user", "content": "x"}], "", "", bad_seed))[-1]
        assert "whole number" in final.notice
        final = list(answerer.stream("s", [{"role": "user", "content": "x"}], "", "{nope", OPTIONS))[-1]
        assert "tools is not valid JSON" in final.notice


def test_answerer_stop_aborts_the_engine_request(fake_model):
    with fake_model(replies=[" ".join(["w"] * 200)], delay=0.01) as model:
        answerer = Answerer(model)
        stream = answerer.stream("s", [{"role": "user", "content": "go"}], "", "", OPTIONS)
        first = next(stream)
        assert not first.done
        threading.Timer(0.1, answerer.stop, ["s"]).start()
        final = list(stream)[-1]
        assert "finish: abort" in final.stats and 0 < len(final.messages[-1]["content"].split()) < 200
        events = [e["event"] for e in read_engine_log(model.config.model_name_or_path)]
        assert events == ["request", "abort"]
        assert not answerer.stop("s")  # nothing running any more


def test_cli_flags_and_auth():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    _environment_defaults(args, {})
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, "off")
    assert _auth(args) is None
    # Gradio's variables (read by LLaMA-Factory's webchat too) fill in what no flag gives
    environ = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7999", "GRADIO_SHARE": "1"}
    args = parser.parse_args([])
    _environment_defaults(args, environ)
    assert (args.host, args.port, args.share) == ("0.0.0.0", 7999, "on")
    args = parser.parse_args(["--host", "127.0.0.1", "--port", "7001", "--share", "off"])
    _environment_defaults(args, environ)
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7001, "off")
    args = parser.parse_args(["--username", "ann", "--password", "pw"])
    assert _auth(args) == ("ann", "pw")
    with pytest.raises(LmchatError, match="needs a password"):
        _auth(parser.parse_args(["--username", "ann"]))


def test_the_adapter_choice_reaches_the_call_options():
    from lmchat.webui.generate import BASE_MODEL

    assert "adapter" not in Options(0.5, 0.9, 10, 8, adapter=BASE_MODEL).generation_kwargs()
    assert "adapter" not in Options(0.5, 0.9, 10, 8).generation_kwargs()
    assert Options(0.5, 0.9, 10, 8, adapter="alpha").generation_kwargs()["adapter"] == "alpha"
