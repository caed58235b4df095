"""The CLI's pieces in-process: options generated from ModelConfig, the error-to-line boundary, front-end wiring,
the chat session's state and commands, plain rendering, multi-line input, stats, and score's input reading."""

from __future__ import annotations

import io
import json
import sys
import types

import pytest

from lmchat import ChatModel
from lmchat.chat.response import ChatChunk
from lmchat.cli import frontends
from lmchat.cli.chat import ChatRepl
from lmchat.cli.failure import error_line, exit_code, report
from lmchat.cli.main import build_parser, main
from lmchat.cli.options import model_args, normalise_flags
from lmchat.cli.reader import read_message
from lmchat.cli.render import PlainOutput
from lmchat.cli.score import read_texts
from lmchat.cli.session import Conversation, parse_assignments
from lmchat.cli.stats import AnswerRecorder
from lmchat.config.model_config import ModelConfig, public_fields
from lmchat.engines.fake import ScriptedEngine
from lmchat.engines.registry import register_engine
from lmchat.errors import (
    EngineError,
    InvalidRequestError,
    MissingDependencyError,
    ModelNotFoundError,
    require,
)


def parse(*argv: str) -> dict:
    parser = build_parser(argv[0])
    args, extras = parser.parse_known_args(normalise_flags(argv, parser.subcommands[argv[0]]))
    assert extras == []
    return model_args(args)


# --- options -------------------------------------------------------------------------------------------------
def test_help_lists_every_config_field_with_its_description_and_default():
    text = " ".join(build_parser("chat").subcommands["chat"].format_help().split())
    for name, field in public_fields().items():
        assert f"--{name}" in text
        assert " ".join(field.description.split()) in text
    assert "(default: 0.95)" in text and "{auto,float32,float16,bfloat16}" in text


@pytest.mark.parametrize("command", ["chat", "serve", "webui", "infer", "score"])
def test_every_subcommand_has_the_model_options(command):
    text = build_parser(command).subcommands[command].format_help()
    assert "--model_name_or_path" in text and "--infer_backend" in text and "CONFIG.yaml" in text


def test_flags_override_the_yaml_file_and_dashed_names_work(tmp_path):
    config = tmp_path / "llama3_lora_sft.yaml"
    config.write_text(
        "model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nadapter_name_or_path: saves/llama3-8b/lora/sft\n"
        "template: llama3\ninfer_backend: huggingface\ntrust_remote_code: true\nfinetuning_type: lora\n"
    )
    args = parse("chat", str(config), "--template", "chatml", "--do-sample", "false", "--max-new-tokens=7")
    assert args["template"] == "chatml" and args["do_sample"] == "false" and args["max_new_tokens"] == "7"
    config = ModelConfig.from_dict(args)
    assert config.adapter_name_or_path == ["saves/llama3-8b/lora/sft"] and config.trust_remote_code is True
    assert (config.do_sample, config.max_new_tokens, config.template) == (False, 7, "chatml")


def test_bare_boolean_flag_means_true_and_none_unsets_a_limit():
    args = parse("chat", "--trust_remote_code", "--max_new_tokens", "none", "--vllm_config", '{"max_num_seqs": 8}')
    assert args == {"trust_remote_code": "true", "max_new_tokens": None, "vllm_config": {"max_num_seqs": 8}}


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["chat", "--tempreature", "0.3"], "Error: Unknown option '--tempreature'; did you mean '--temperature'? "
                                           "Every option: lmchat chat --help; every setting: lmchat --help-config."),
        (["chta"], "Error: Unknown command 'chta'; did you mean 'chat'?"),
        (["chat", "model-folder"], "Error: Expected a .yaml/.yml/.json config file, got 'model-folder'. "
                                   "To choose a model, use --model_name_or_path model-folder."),
        (["chat", "--temperature"], "Error: Argument --temperature: expected one argument."),
        (["chat", "missing.yaml"], "Error: Config file not found: missing.yaml"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv, line, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err == line + "\n"


# --- the error boundary ----------------------------------------------------------------------------------------
def test_missing_dependency_line_names_the_install_command():
    with pytest.raises(MissingDependencyError) as caught:
        require("surely_not_installed_pkg", "vllm")
    assert error_line(caught.value) == (
        "Error: The Python package 'surely_not_installed_pkg' is not installed. "
        "Install it with: pip install 'lmchat[vllm]'"
    )
    assert exit_code(caught.value) == 1


def test_missing_engine_dependency_through_the_chat_command(capsys, monkeypatch):
    class NeedsPackage(ScriptedEngine):
        async def start(self) -> None:
            require("surely_not_installed_pkg", "needs")

    register_engine("needs-package", NeedsPackage)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\n"))
    assert main(["chat", "--infer_backend", "needs-package"]) == 1
    assert capsys.readouterr().err == (
        "Error: The Python package 'surely_not_installed_pkg' is not installed. "
        "Install it with: pip install 'lmchat[needs]'\n"
    )


@pytest.mark.parametrize(
    ("exc", "line", "code"),
    [
        (ModelNotFoundError("Model not found: x."), "Error: Model not found: x.", 1),
        (ModuleNotFoundError("No module named 'fastapi'", name="fastapi"),
         "Error: the Python package 'fastapi' is not installed; install it (pip install fastapi) or the lmchat "
         "extra that provides it.", 1),
        (FileNotFoundError(2, "No such file or directory", "conv.json"), "Error: No such file or directory: conv.json",
         1),
        (RuntimeError("boom\nsecond line"), "Error: unexpected RuntimeError: boom second line (run again with --debug "
                                            "to see the traceback)", 1),
        (KeyboardInterrupt(), "Interrupted.", 130),
    ],
)
def test_error_lines(exc, line, code):
    assert (error_line(exc), exit_code(exc)) == (line, code)


def test_debug_adds_the_traceback():
    stream = io.StringIO()
    try:
        raise EngineError("it broke")
    except EngineError as exc:
        assert report(exc, debug=True, stream=stream) == 1
    assert stream.getvalue().startswith("Traceback") and stream.getvalue().endswith("Error: it broke\n")


# --- front ends plugged in -------------------------------------------------------------------------------------
def test_a_front_end_without_its_extra_names_the_install_command(monkeypatch, capsys):
    """Every front end exists; one whose optional package is missing says which extra to install, before the model
    is loaded (the script named here does not exist: loading would fail with another message)."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert main(["webui", "--infer_backend", "fake", "--model_name_or_path", "missing.json"]) == 1
    assert capsys.readouterr().err == (
        "Error: The Python package 'gradio' is not installed. Install it with: pip install 'lmchat[webui]'\n"
    )


def test_serve_adds_its_flags_and_runs_with_the_model_settings(monkeypatch, tmp_path):
    calls = []
    module = types.ModuleType("fake_server_cli")
    module.add_arguments = lambda parser: parser.add_argument("--port", type=int, default=8000)
    module.run = lambda args, settings: calls.append((args.port, settings)) or 0
    monkeypatch.setitem(sys.modules, "fake_server_cli", module)
    monkeypatch.setitem(frontends.FRONTEND_MODULES, "serve", "fake_server_cli")
    config = tmp_path / "c.yaml"
    config.write_text("infer_backend: fake\ntemplate: chatml\n")
    assert main(["serve", str(config), "--port", "9001", "--template-name", "x"]) == 2  # typo: closest option named
    assert main(["serve", str(config), "--port", "9001", "--model-name-or-path", "s.json"]) == 0
    assert calls == [(9001, {"infer_backend": "fake", "template": "chatml", "model_name_or_path": "s.json"})]


# --- the chat session ------------------------------------------------------------------------------------------
def test_conversation_undo_and_save_load_roundtrip(tmp_path):
    conversation = Conversation(system="Be brief.")
    for text in ("one", "two"):
        conversation.add_user(text)
        conversation.add_answer(text.upper())
    assert conversation.undo() == 2 and conversation.undo() == 2 and conversation.undo() == 0
    conversation.add_user("three")
    conversation.add_answer("THREE")
    path = tmp_path / "conv.json"
    assert conversation.save(path) == 3
    assert json.loads(path.read_text()) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "THREE"},
    ]
    assert Conversation.load(path) == conversation


def test_load_rejects_what_is_not_a_conversation(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"role": "wizard", "content": "x"}]')
    with pytest.raises(InvalidRequestError, match="role 'wizard'"):
        Conversation.load(path)
    path.write_text("{not json")
    with pytest.raises(InvalidRequestError, match="is not valid JSON"):
        Conversation.load(path)


def test_set_values_are_json_or_text():
    assert parse_assignments('temperature=0.3 stop=### seed= top_k=5 max_tokens=9 stop=["a b"]  ') == {
        "temperature": 0.3, "stop": ["a b"], "seed": None, "top_k": 5, "max_new_tokens": 9,
    }
    assert parse_assignments("stop=User said top_p=0.5") == {"stop": "User said", "top_p": 0.5}
    with pytest.raises(InvalidRequestError, match="Expected key=value"):
        parse_assignments("temperature")


class ScriptedStream:
    """A stand-in for ChatModel whose answers are given chunk by chunk (reasoning included)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []
        self.config = ModelConfig()
        self.engine = types.SimpleNamespace(count_tokens=lambda text: len(text.split()), name="stub",
                                            info=types.SimpleNamespace(name="stub-model"))

    def prepare(self, messages, system=None, **options):
        self.seen.append([dict(m) for m in messages])
        return types.SimpleNamespace(prompt_tokens=3)

    def stream_chunks(self, prepared):
        yield from self.answers.pop(0)


def test_reasoning_is_shown_apart_and_not_kept_in_the_history():
    chunks = [ChatChunk(0, reasoning="Let me think."), ChatChunk(0, text="Four.", content="Four."),
              ChatChunk(0, finish_reason="stop", prompt_tokens=3, completion_tokens=6)]
    model = ScriptedStream([chunks, [ChatChunk(0, text="Ok", content="Ok", finish_reason="stop")]])
    out = io.StringIO()
    repl = ChatRepl(model, reader=None, output=PlainOutput(True, out, io.StringIO()), interactive=True)
    repl.handle("2+2?")
    repl.handle("thanks")
    assert out.getvalue() == "Thinking: Let me think.\nAssistant: Four.\nAssistant: Ok\n"
    assert model.seen[1][1] == {"role": "assistant", "content": "Four."}


def test_piped_output_sends_reasoning_and_notices_to_stderr():
    model = ScriptedStream([[ChatChunk(0, reasoning="hmm"), ChatChunk(0, text="A", content="A", finish_reason="stop")]])
    out, err = io.StringIO(), io.StringIO()
    repl = ChatRepl(model, reader=None, output=PlainOutput(False, out, err), interactive=False)
    repl.handle("q")
    repl.handle("clear")
    assert (out.getvalue(), err.getvalue()) == ("A\n", "hmm\nHistory has been removed.\n")


class ListReader:
    def __init__(self, *lines):
        self.lines = list(lines)
        self.prompts = []

    def read(self, prompt):
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError
        return self.lines.pop(0)


def test_triple_quotes_make_a_multi_line_message():
    reader = ListReader('"""', "first", "", "second", '"""', '"""one line"""', "plain")
    assert read_message(reader) == "first\n\nsecond"
    assert read_message(reader) == "one line"
    assert read_message(reader) == "plain"
    assert reader.prompts == ["User: ", "... ", "... ", "... ", "... ", "User: ", "User: "]


def test_stats_count_time_to_first_token_and_speed():
    ticks = iter([0.0, 0.5, 1.5])
    recorder = AnswerRecorder(prompt_tokens=10, clock=lambda: next(ticks))
    recorder.add(ChatChunk(0, text="a", content="a"))
    recorder.add(ChatChunk(0, text=" b", content=" b", finish_reason="stop", prompt_tokens=10, completion_tokens=5))
    recorder.done()
    assert recorder.stats(len).describe() == (
        "Last answer: prompt 10 tokens, answer 5 tokens, time to first token 0.50 s, speed 4.0 tokens/s, "
        "total 1.50 s."
    )


def test_set_is_validated_like_a_chat_call(fake_script):
    with ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(replies=["x"])}) as model:
        errors = io.StringIO()
        repl = ChatRepl(model, reader=None, output=PlainOutput(True, io.StringIO(), errors), interactive=True)
        for command in ("/set top_p=2", "/set n=2", "/set enable_thinking=maybe", "/set temperature=0.3 seed=1"):
            repl.handle(command)
    assert repl.options == {"temperature": 0.3, "seed": 1}
    lines = errors.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("Error: Invalid value for 'top_p'")
    assert lines[1:] == ["Error: The chat shows one answer at a time, so n must be 1.",
                         "Error: Invalid value for 'enable_thinking': use true or false (got 'maybe')."]


# --- score -----------------------------------------------------------------------------------------------------
def test_score_reads_lines_and_jsonl():
    lines = io.StringIO('plain text\n\n{"text": "from json", "id": 3}\n')
    assert list(read_texts(lines)) == ["plain text", "from json"]
    with pytest.raises(InvalidRequestError, match="stdin line 1: a JSON line needs a string 'text' field"):
        list(read_texts(io.StringIO('{"prompt": "x"}\n')))


class NotebookSession:
    """Not the terminal REPL: any object with the commands' Session members drives them."""

    def __init__(self):
        self.conversation, self.options, self.last_stats, self.notices = Conversation(), {}, None, []
        self.answers = 0

    def notice(self, text):
        self.notices.append(text)

    def set_options(self, options):
        self.options = options

    def answer(self):
        self.answers += 1
        self.conversation.add_answer(f"answer {self.answers}")
        return True


def test_commands_need_only_the_session_protocol():
    from lmchat.cli.commands import run_command

    session = NotebookSession()
    session.conversation.add_user("q")
    session.conversation.add_answer("first")
    assert run_command(session, "/regen") and session.conversation.messages[-1]["content"] == "answer 1"
    assert run_command(session, "/set temperature=0.2") and session.options == {"temperature": 0.2}
    assert run_command(session, "/system Be brief.") and session.conversation.system == "Be brief."
    assert run_command(session, "clear") and session.conversation.messages == []
    assert run_command(session, "/stats") and session.notices[-1] == "No answer yet."
    assert run_command(session, "exit") is False and run_command(session, "/exit") is False
    with pytest.raises(InvalidRequestError, match="Unknown command '/regenerate'; did you mean '/regen'"):
        run_command(session, "/regenerate")
    assert session.notices == ["Set temperature=0.2.", "System prompt set.", "History has been removed.",
                               "No answer yet."]
