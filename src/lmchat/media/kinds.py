"""The three media kinds, the MIME types each accepts, and the one error constructor of the media package."""

from __future__ import annotations

from typing import Literal

from lmchat.errors import InvalidRequestError

MediaKind = Literal["image", "video", "audio"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("image", "video", "audio")

# Besides "<kind>/*": generic binary types that object stores and CDNs send, and container types per kind.
_GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/binary"})
_EXTRA_TYPES: dict[str, frozenset[str]] = {
    "image": frozenset(),
    "video": frozenset({"application/mp4", "application/ogg", "application/x-matroska"}),
    # An audio track is read from a video container too (an .m4a is often served as video/mp4).
    "audio": frozenset({"application/ogg", "application/mp4"}),
}
_ALSO_TOP_LEVEL: dict[str, frozenset[str]] = {"image": frozenset(), "video": frozenset(), "audio": frozenset({"video"})}

# The FFmpeg demuxers untrusted files may reach (format_whitelist), and no protocol for nested opens: playlists
# (concat, HLS) and external references would otherwise make FFmpeg read other files or URLs.
VIDEO_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,ogg,asf,gif"
AUDIO_DEMUXERS = VIDEO_DEMUXERS + ",mp3,aac,wav,w64,flac,amr,aiff,caf"


def ffmpeg_options(demuxers: str) -> dict[str, str]:
    """The options every PyAV open of untrusted bytes gets."""
    return {"format_whitelist": demuxers, "protocol_whitelist": "none", "enable_drefs": "0"}


FORMAT_HINTS: dict[str, str] = {
    "image": "Send a PNG, JPEG, WebP, GIF, BMP or TIFF image.",
    "video": "Send an MP4, WebM, MKV, MOV or AVI video, or a list of frames.",
    "audio": "Send a WAV, FLAC, MP3, OGG/Opus or M4A file, or an (array, sampling_rate) pair.",
}


def media_error(param: str | None, message: str) -> InvalidRequestError:
    """The error every media problem raises: ``message`` says what was wrong and what to do."""
    return InvalidRequestError(message, param=param)


def bare_mime(content_type: str | None) -> str | None:
    """``'Image/PNG; charset=x'`` -> ``'image/png'``; None or an empty type -> None."""
    if not content_type:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime or None


def check_media_type(content_type: str | None, kind: MediaKind, origin: str, param: str | None) -> None:
    """Refuse a declared type that is not ``kind``; an absent type is left to the decoder to recognise."""
    mime = bare_mime(content_type)
    if mime is None or mime in _GENERIC_TYPES or mime in _EXTRA_TYPES[kind]:
        return
    top = mime.split("/", 1)[0]
    if top == kind or top in _ALSO_TOP_LEVEL[kind]:
        return
    raise media_error(
        param, f"{origin} is '{mime}', not {'an' if kind[0] in 'aeiou' else 'a'} {kind}. {FORMAT_HINTS[kind]}"
    )
