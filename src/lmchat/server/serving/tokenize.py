"""vLLM's ``/tokenize`` and ``/detokenize``: token ids exactly as the engine sees the prompt."""

from __future__ import annotations

from lmchat.chat.messages import build_conversation
from lmchat.errors import InvalidRequestError, UnsupportedError
from lmchat.server.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from lmchat.server.serving.base import ServerState


class ServingTokenize:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def tokenize(self, body: TokenizeRequest) -> TokenizeResponse:
        self.state.check_model(body.model)
        if body.add_special_tokens:
            raise UnsupportedError(
                "add_special_tokens is not supported: lmchat tokenizes text as the engine receives it (a chat "
                "template writes its own special tokens). Leave it out.", param="add_special_tokens",
            )
        if (body.prompt is None) == (body.messages is None):
            raise InvalidRequestError("Send either prompt or messages.", param="prompt")
        engine = self.state.chat_model.engine
        text = body.prompt if body.prompt is not None else self._render(body)
        tokens = engine.tokenize(text)
        return TokenizeResponse(count=len(tokens), max_model_len=engine.info.context_length, tokens=tokens)

    def _render(self, body: TokenizeRequest) -> str:
        model = self.state.chat_model
        conversation = build_conversation(body.messages or [], None, model.config.default_system)
        kwargs = dict(body.chat_template_kwargs or {})
        return model.render(conversation, body.tools, add_generation_prompt=body.add_generation_prompt, **kwargs)

    def detokenize(self, body: DetokenizeRequest) -> DetokenizeResponse:
        self.state.check_model(body.model)
        if any(token < 0 for token in body.tokens):
            raise InvalidRequestError("Token ids must not be negative.", param="tokens")
        try:
            text = self.state.chat_model.engine.detokenize(body.tokens)
        except (IndexError, ValueError, OverflowError, TypeError):
            raise InvalidRequestError(
                "The tokens include ids outside the model's vocabulary.", param="tokens"
            ) from None
        return DetokenizeResponse(prompt=text)
