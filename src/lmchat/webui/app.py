"""The chat page: Gradio layout and event wiring over :class:`~lmchat.webui.handlers.ChatHandlers`."""

from pathlib import Path

import gradio as gr

from lmchat.chat.chat_model import ChatModel
from lmchat.webui.generate import BASE_MODEL
from lmchat.webui.handlers import ChatHandlers

STORAGE_KEY = "lmchat-webui"
_CSS = """
#lmchat-stats { min-height: 1.5em; color: var(--body-text-color-subdued); }
footer { display: none !important; }
"""
_TOOLS_HINT = '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]'


def build_app(model: ChatModel, media_dir: Path) -> gr.Blocks:
    """The page for ``model``; files received and made (uploads, downloads) live under ``media_dir``."""
    handlers = ChatHandlers(model, media_dir)
    with gr.Blocks(title=f"lmchat · {model.engine.info.name}", analytics_enabled=False) as page:
        saved = gr.BrowserState({"messages": [], "system": "", "tools": ""}, storage_key=STORAGE_KEY)
        messages = gr.State([])
        gr.Markdown(_header(model), elem_id="lmchat-header")
        with gr.Row():
            with gr.Column(scale=3):
                chat = _chat_column()
            with gr.Column(scale=1, min_width=280):
                controls = _controls_column(model, handlers.supports_thinking)
        _wire(page, handlers, saved, messages, chat, controls)
    return page


def _header(model: ChatModel) -> str:
    info = model.engine.info
    return f"### {info.name}\nengine: `{model.engine.name}` · template: `{model.template.name}`"


def _media_types(model: ChatModel) -> list[str]:
    capabilities = model.engine.capabilities
    kinds = ["image"]  # always offered: an engine that cannot take images says so in the page
    kinds += ["video"] * capabilities.videos + ["audio"] * capabilities.audios
    return kinds


def _chat_column() -> dict:
    chatbot = gr.Chatbot(
        label="Chat", elem_id="lmchat-chat", height=520, editable="user", buttons=["copy", "copy_all"],
        placeholder="Ask anything. Attach images with the clip.", autoscroll=True,
    )
    box = gr.MultimodalTextbox(
        elem_id="lmchat-input", file_count="multiple", file_types=None, sources=["upload"],
        placeholder="Message (Enter to send, Shift+Enter for a new line)", show_label=False, lines=1,
    )
    with gr.Row():
        stop = gr.Button("Stop", variant="stop", elem_id="lmchat-stop", size="sm")
        regenerate = gr.Button("Regenerate", elem_id="lmchat-regenerate", size="sm")
        undo = gr.Button("Undo", elem_id="lmchat-undo", size="sm")
        clear = gr.Button("Clear", elem_id="lmchat-clear", size="sm")
    stats = gr.Markdown("", elem_id="lmchat-stats")
    with gr.Accordion("Tool result", open=False, elem_id="lmchat-tool-result"):
        tool_text = gr.Textbox(show_label=False, lines=3, placeholder="The result of the model's tool call")
        tool_send = gr.Button("Send tool result", elem_id="lmchat-tool-send", size="sm")
    return {"chatbot": chatbot, "box": box, "stop": stop, "regenerate": regenerate, "undo": undo, "clear": clear,
            "stats": stats, "tool_text": tool_text, "tool_send": tool_send}


def _controls_column(model: ChatModel, supports_thinking: bool) -> dict:
    config = model.config
    context = model.engine.info.context_length or 4096
    system = gr.Textbox(label="System prompt", lines=3, elem_id="lmchat-system",
                        placeholder=config.default_system or "You are a helpful assistant.")
    temperature = gr.Slider(0, 2, value=config.temperature, step=0.05, label="Temperature", elem_id="lmchat-temperature")
    top_p = gr.Slider(0.05, 1, value=config.top_p, step=0.05, label="Top p", elem_id="lmchat-top-p")
    top_k = gr.Slider(0, 200, value=config.top_k, step=1, label="Top k", elem_id="lmchat-top-k")
    max_new = gr.Slider(1, max(context, 1), value=min(config.max_new_tokens or 1024, context), step=1,
                        label="Max new tokens", elem_id="lmchat-max-new-tokens")
    seed = gr.Textbox("", label="Seed", placeholder="empty: a random seed", elem_id="lmchat-seed", max_lines=1)
    adapters = [adapter.name for adapter in model.adapters]
    adapter = gr.Dropdown([BASE_MODEL, *adapters], value=BASE_MODEL, label="LoRA adapter", visible=bool(adapters),
                          elem_id="lmchat-adapter", interactive=True)
    thinking = gr.Checkbox(config.enable_thinking, label="enable_thinking", visible=supports_thinking,
                           elem_id="lmchat-thinking")
    with gr.Accordion("Tools (JSON)", open=False, elem_id="lmchat-tools-accordion"):
        tools = gr.Code("", language="json", label=f"Tool definitions, e.g. {_TOOLS_HINT}", elem_id="lmchat-tools",
                        interactive=True, lines=6)
    with gr.Accordion("Conversation file", open=True):
        download = gr.DownloadButton("Download JSON", elem_id="lmchat-download", size="sm")
        upload = gr.UploadButton("Upload JSON", file_types=[".json"], elem_id="lmchat-upload", size="sm")
    return {"system": system, "temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new": max_new,
            "seed": seed, "thinking": thinking, "tools": tools, "download": download, "upload": upload,
            "adapter": adapter}


def _wire(page: gr.Blocks, handlers: ChatHandlers, saved, messages, chat: dict, controls: dict) -> None:
    chatbot, box, stats = chat["chatbot"], chat["box"], chat["stats"]
    system, tools = controls["system"], controls["tools"]
    answer_inputs = [messages, system, tools, controls["temperature"], controls["top_p"],
                     controls["top_k"], controls["max_new"], controls["seed"], controls["thinking"],
                     controls["adapter"]]

    def then_save(event):
        """Every change of the conversation is saved in the browser and made the download file."""
        return event.then(handlers.persist, [messages, system, tools], [saved, controls["download"]], queue=False)

    def then_answer(event) -> None:
        then_save(event)
        answered = event.success(handlers.respond, answer_inputs, [chatbot, messages, stats], concurrency_limit=8)
        then_save(answered).then(lambda: gr.MultimodalTextbox(interactive=True), None, box, queue=False)

    turn = [messages, box, chatbot]
    then_answer(box.submit(handlers.add_user_turn, [box, messages], turn, queue=False))
    then_answer(chat["regenerate"].click(handlers.regenerate, messages, turn, queue=False))
    then_answer(chatbot.retry(handlers.regenerate, messages, turn, queue=False))
    then_answer(chatbot.edit(handlers.edit, messages, turn, queue=False))
    then_answer(chat["tool_send"].click(handlers.add_tool_result, [chat["tool_text"], messages],
                                        [messages, chat["tool_text"], chatbot], queue=False))
    chat["stop"].click(handlers.stop, None, None, queue=False)
    for trigger in (chat["undo"].click, chatbot.undo):
        then_save(trigger(handlers.undo, messages, [messages, box, chatbot, stats], queue=False))
    for trigger in (chat["clear"].click, chatbot.clear):
        then_save(trigger(handlers.clear, None, [messages, box, chatbot, stats], queue=False))
    then_save(controls["upload"].upload(handlers.upload, controls["upload"], [messages, system, tools, chatbot, stats]))
    gr.on([system.change, tools.change], handlers.persist, [messages, system, tools], [saved, controls["download"]],
          queue=False)
    then_save(page.load(handlers.restore, saved, [messages, system, tools, chatbot]))
