"""The chat facade: ChatModel, its responses, and the steps it is built from."""

from lmchat.chat.chat_model import ChatModel
from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk, Response

__all__ = ["ChatChunk", "ChatModel", "PreparedChat", "Response"]
