"""The media of one chat call, decided once: which medium each placeholder of the conversation stands for, where
media may be read from, and the decoded media the engine receives.

Media come from two places: the call's ``images=``/``videos=``/``audios=`` (LLaMA-Factory's dataset columns and
chat arguments) and the conversation's content parts (OpenAI's ``image_url``/``input_audio``, vLLM's
``video_url``/``audio_url``, transformers' ``{"type": "image", "image": ...}``). A content part without a source
(``{"type": "image"}``) and LLaMA-Factory's ``<image>``/``<video>``/``<audio>`` in the text stand for the next item
of ``images=``/...; when the conversation has no placeholder of a kind at all, its items are prepended to the
first user message, as LLaMA-Factory does (images, then videos, then audios, each before what is there). After :func:`bind_media` every media part of the conversation is a bare
placeholder ``{"type": KIND}`` (what multimodal chat templates render) and the media are listed in prompt order.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmchat.chat.messages import MEDIA_KINDS, Media, part_media
from lmchat.errors import InvalidRequestError

if TYPE_CHECKING:
    from lmchat.config.model_config import ModelConfig
    from lmchat.media import FetchPolicy, MediaLoader, MediaOptions

PLACEHOLDERS = {kind: f"<{kind}>" for kind in MEDIA_KINDS}  # LLaMA-Factory's IMAGE/VIDEO/AUDIO_PLACEHOLDER
_PLACEHOLDER = re.compile("(" + "|".join(map(re.escape, PLACEHOLDERS.values())) + ")")


@dataclass(frozen=True)
class MediaItem:
    """One medium of a call: its kind, its source as given, and the request field errors about it name."""

    kind: str
    source: Any
    param: str


# --- placeholders -------------------------------------------------------------------------------------------
def bind_media(conversation: list[dict[str, Any]], explicit: Media, offset: int = 0
               ) -> tuple[list[dict[str, Any]], tuple[MediaItem, ...]]:
    """``(conversation, items)``: each media part a bare placeholder, and the media in the order they appear.

    ``conversation`` is the facade's own copy (changed in place); ``offset`` is how many messages the facade put
    before the caller's (a system prompt), so errors name the caller's ``messages[i]``.
    """
    given = {kind: list(items) for kind, items in zip(MEDIA_KINDS, (explicit.images, explicit.videos, explicit.audios))}
    wanted = {kind for kind, items in given.items() if items}  # LLaMA-Factory's <image> only stands for these
    for index, message in enumerate(conversation):
        message["content"] = _split_placeholders(message.get("content"), wanted)
    for kind in MEDIA_KINDS:  # LLaMA-Factory prepends images, then videos, then audios: audios come first
        if kind in wanted and not _has_placeholder(conversation, kind):
            _insert_placeholders(conversation, kind, len(given[kind]))
    places = {kind: _count_placeholders(conversation, kind) for kind in MEDIA_KINDS}
    for kind in MEDIA_KINDS:
        if places[kind] != len(given[kind]):
            raise _count_error(places[kind], len(given[kind]), kind)
    items: list[MediaItem] = []
    used = dict.fromkeys(MEDIA_KINDS, 0)
    for index, message in enumerate(conversation):
        content = message.get("content")
        for number, part in enumerate(content if isinstance(content, list) else ()):
            if part.get("type") not in MEDIA_KINDS:
                continue
            kind, source = part["type"], part.get(part["type"])
            if source is None:
                source, param = given[kind][used[kind]], f"{kind}s[{used[kind]}]"
                used[kind] += 1
            else:
                param = f"messages[{index - offset}].content[{number}]"
            items.append(MediaItem(kind, source, param))
            content[number] = {"type": kind}
    return conversation, tuple(items)


def _split_placeholders(content: Any, kinds: set[str]) -> Any:
    """Text holding ``<image>`` (for a kind given as ``images=``) becomes text and placeholder parts."""
    if not kinds:
        return content
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list) or not any(_marks(part, kinds) for part in parts):
        return content
    split: list[dict[str, Any]] = []
    for part in parts:
        if not _marks(part, kinds):
            split.append(part)
            continue
        for piece in _PLACEHOLDER.split(part["text"]):
            kind = piece[1:-1] if piece in PLACEHOLDERS.values() else None
            if kind in kinds:
                split.append({"type": kind})
            elif piece:
                split.append({"type": "text", "text": piece})
    return split


def _marks(part: Any, kinds: set[str]) -> bool:
    return (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            and any(PLACEHOLDERS[kind] in part["text"] for kind in kinds))


def _has_placeholder(conversation: list[dict[str, Any]], kind: str) -> bool:
    return _count_placeholders(conversation, kind) > 0


def _count_placeholders(conversation: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for message in conversation for part in _parts(message)
               if isinstance(part, dict) and part.get("type") == kind and part.get(kind) is None)


def _insert_placeholders(conversation: list[dict[str, Any]], kind: str, count: int) -> None:
    """LLaMA-Factory: media given without placeholders are prepended to the first user message."""
    message = next((m for m in conversation if m["role"] == "user"), None)
    if message is None:
        raise InvalidRequestError(f"{kind}s were given, but the conversation has no user message to attach them to.",
                                  param=f"{kind}s")
    content = message.get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
    message["content"] = [*({"type": kind} for _ in range(count)), *parts]


def _parts(message: dict[str, Any]) -> list[Any]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _count_error(places: int, count: int, kind: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"The conversation has {places} {kind} placeholder(s) ({PLACEHOLDERS[kind]} or {{'type': '{kind}'}}) but "
        f"{count} {kind}(s) were given as {kind}s=; give one {kind} per placeholder.",
        param=f"{kind}s",
    )


def count_by_kind(items: Sequence[MediaItem]) -> dict[str, int]:
    """``{"images": n, "videos": n, "audios": n}`` (the names capability checks and errors use)."""
    return {f"{kind}s": sum(1 for item in items if item.kind == kind) for kind in MEDIA_KINDS}


# --- where media may come from, how it is shaped ---------------------------------------------------------
def media_options(config: ModelConfig) -> MediaOptions:
    """LLaMA-Factory's image/video/audio keys of the config as the media package's options."""
    from lmchat.media import MediaOptions

    names = ("image_max_pixels", "image_min_pixels", "video_max_pixels", "video_min_pixels", "video_fps",
             "video_maxlen", "audio_sampling_rate")
    return MediaOptions.from_dict({name: getattr(config, name) for name in names})


def fetch_policy(config: ModelConfig, *, trusted: bool) -> FetchPolicy:
    """Where a call's media may be read from.

    ``trusted`` callers are the process's own user (the library, the terminal chat, batch inference over the
    operator's dataset): without ``allowed_local_media_path`` they may name any local file, as in
    LLaMA-Factory. Requests from others (the server's clients, the web page's users) read local files only under
    ``allowed_local_media_path`` (vLLM's ``--allowed-local-media-path``), none without it. URLs are fetched under
    the same guard for both: public addresses only, unless ``allowed_media_domains`` names the host.
    """
    from lmchat.media import FetchPolicy

    folder = config.allowed_local_media_path or ("/" if trusted else None)
    return FetchPolicy.from_dict({"allowed_local_media_path": folder, "allowed_domains": config.allowed_media_domains})


async def load_media(loader: MediaLoader, items: Sequence[MediaItem]) -> Media:
    """Fetch and decode every item on worker threads (never on the event loop), once; the first error is raised
    when all loads are done, naming the item's request field."""
    results = await asyncio.gather(*(loader.aload(item.kind, item.source, param=item.param) for item in items),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    by_kind = {kind: tuple(r for r, item in zip(results, items) if item.kind == kind) for kind in MEDIA_KINDS}
    return Media(by_kind["image"], by_kind["video"], by_kind["audio"])
