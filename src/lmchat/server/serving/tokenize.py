"""vLLM's ``/tokenize`` and ``/detokenize``: token ids exactly as the engine sees the prompt (``/detokenize``
answers llama.cpp's ``content`` beside vLLM's ``prompt``)."""

from __future__ import annotations

import asyncio

from lmchat.chat.chat_model import has_media_parts
from lmchat.chat.messages import build_conversation
from lmchat.chat.options import check_template_kwargs
from lmchat.errors import InvalidRequestError, UnsupportedError
from lmchat.server.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from lmchat.server.protocol_messages import as_dicts
from lmchat.server.serving.base import ServerState
from lmchat.templates.continuation import cut_after_final_message, generation_prompt_flags


class ServingTokenize:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def tokenize(self, body: TokenizeRequest) -> TokenizeResponse:
        self.state.check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise InvalidRequestError("Send either prompt or messages.", param="prompt")
        engine = self.state.chat_model.engine
        if body.messages is not None and has_media_parts(as_dicts(body.messages)):
            tokens = await self._media_tokens(body)
        else:
            tokens = await asyncio.to_thread(self._text_tokens, body)  # rendering and tokenizing: off the loop
        return TokenizeResponse(count=len(tokens), max_model_len=engine.info.context_length, tokens=tokens,
                                token_strs=engine.token_strs(tokens) if body.return_token_strs else None)

    def _text_tokens(self, body: TokenizeRequest) -> list[int]:
        if body.prompt is not None:
            for name in ("continue_final_message", "tools", "chat_template_kwargs", "add_generation_prompt"):
                if getattr(body, name) not in (None, False):
                    raise InvalidRequestError(f"{name} applies to messages, not to a prompt.", param=name)
            text, add_special = body.prompt, body.add_special_tokens is not False  # vLLM: true for a prompt
        else:
            text, add_special = self._render(body), bool(body.add_special_tokens)  # the template writes them
        return self.state.chat_model.engine.tokenize(text, add_special_tokens=add_special)

    async def _media_tokens(self, body: TokenizeRequest) -> list[int]:
        """Messages with media: the prompt exactly as a chat request would send it (the facade binds, fetches and
        decodes the media under the clients' policy; the engine's processor expands their placeholders)."""
        add, keep = generation_prompt_flags(body.add_generation_prompt, body.continue_final_message)
        if keep or not add:
            raise UnsupportedError(
                "Messages with media are tokenized as a chat request sends them, with the generation prompt: "
                "leave add_generation_prompt at true.", param="add_generation_prompt",
            )
        prepared = await self.state.chat_model.aprepare(
            as_dicts(body.messages), tools=as_dicts(body.tools), media_loader=self.state.media_loader,
            chat_template_kwargs=body.chat_template_kwargs,
        )
        return list(prepared.prompt_token_ids)

    def _render(self, body: TokenizeRequest) -> str:
        model = self.state.chat_model
        conversation = build_conversation(as_dicts(body.messages) or [], None, model.config.default_system)
        kwargs = check_template_kwargs(body.chat_template_kwargs or {})
        add, keep = generation_prompt_flags(body.add_generation_prompt, body.continue_final_message)
        prompt = model.render(conversation, as_dicts(body.tools), add_generation_prompt=add, **kwargs)
        return cut_after_final_message(prompt, conversation) if keep else prompt

    def detokenize(self, body: DetokenizeRequest) -> DetokenizeResponse:
        self.state.check_model(body.model)
        if any(token < 0 for token in body.tokens):
            raise InvalidRequestError("Token ids must not be negative.", param="tokens")
        vocab_size = self.state.chat_model.engine.info.vocab_size
        if vocab_size is not None and any(token >= vocab_size for token in body.tokens):
            raise InvalidRequestError(f"The tokens include ids outside the model's vocabulary (ids 0 to "
                                      f"{vocab_size - 1}).", param="tokens")
        try:
            text = self.state.chat_model.engine.detokenize(body.tokens)
        except (IndexError, ValueError, OverflowError, TypeError):
            raise InvalidRequestError(
                "The tokens include ids outside the model's vocabulary.", param="tokens"
            ) from None
        return DetokenizeResponse(prompt=text, content=text)
