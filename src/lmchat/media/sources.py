"""Turning a media source into bytes: http(s) URLs, data: URLs, local paths and file:// URLs, bytes, file objects.

Already-decoded objects (PIL images, arrays, frame lists) never come here: the loaders handle them. Every read is
capped at the policy's ``max_bytes``; local files are read only inside ``allowed_local_media_path``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from lmchat.media.kinds import MediaKind, check_media_type, media_error
from lmchat.media.policy import FetchPolicy

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


@dataclass(frozen=True)
class MediaBytes:
    """The raw bytes of one media file, its declared MIME type (if any) and where it came from (for messages)."""

    data: bytes
    mime: str | None
    origin: str


def is_byte_source(source: Any) -> bool:
    """Whether ``source`` is something :func:`read_source` reads (rather than an already-decoded object)."""
    if isinstance(source, (str, bytes, bytearray, memoryview, os.PathLike)):
        return True
    if isinstance(source, dict):
        return source.get("bytes") is not None or source.get("path") is not None
    return callable(getattr(source, "read", None))


def read_source(source: Any, kind: MediaKind, policy: FetchPolicy, param: str | None = None) -> MediaBytes:
    """The bytes of ``source`` under ``policy``; anything refused or unreadable raises InvalidRequestError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return MediaBytes(_capped(bytes(source), policy, f"The {kind} data", param), None, f"the {kind} data")
    if isinstance(source, os.PathLike):
        return read_local(os.fspath(source), kind, policy, param)
    if isinstance(source, dict):  # a datasets Image/Audio/Video feature: {"bytes": ..., "path": ...}
        if source.get("bytes") is not None:
            return read_source(source["bytes"], kind, policy, param)
        return read_source(source["path"], kind, policy, param)
    if isinstance(source, str):
        return _read_string(source, kind, policy, param)
    if callable(getattr(source, "read", None)):
        data = source.read(policy.max_bytes + 1)
        if not isinstance(data, bytes):
            raise media_error(param, f"The {kind} file object was opened in text mode; open it with 'rb'.")
        return MediaBytes(_capped(data, policy, f"The {kind} file object", param), None, f"the {kind} file object")
    raise media_error(param, f"Cannot read {type(source).__name__} as {kind}: give a path, an http(s) or data: "
                             "URL, or bytes.")


def _read_string(source: str, kind: MediaKind, policy: FetchPolicy, param: str | None) -> MediaBytes:
    text = source.strip()
    if text[:5].lower() == "data:":
        return read_data_url(text, kind, policy, param)
    match = _URL_SCHEME.match(text)
    scheme = match.group(1).lower() if match else None
    if scheme in ("http", "https"):
        from lmchat.media.fetch import fetch_url

        fetched = fetch_url(text, kind, policy, param=param)
        return MediaBytes(fetched.data, fetched.content_type, f"the {kind} at '{fetched.url}'")
    if scheme == "file":
        return read_local(_file_url_path(text, kind, param), kind, policy, param)
    if scheme is not None and "://" in text:
        raise media_error(param, f"The {kind} URL uses '{scheme}:', which is not allowed; use an http(s) URL, a "
                                 "data: URL or a local path.")
    return read_local(source, kind, policy, param)


def read_data_url(url: str, kind: MediaKind, policy: FetchPolicy, param: str | None = None) -> MediaBytes:
    """The bytes of a ``data:[<type>][;base64],<data>`` URL (RFC 2397), checked against ``kind``."""
    origin = f"the {kind} data: URL"
    if "data" not in policy.allowed_schemes:
        raise media_error(param, f"data: URLs are not allowed here; send the {kind} by URL.")
    head, comma, payload = url[5:].partition(",")
    if not comma:
        raise media_error(param, f"The {kind} data: URL has no ',' before its data; write "
                                 f"'data:{kind}/TYPE;base64,DATA'.")
    params = [part.strip() for part in head.split(";")]
    is_base64 = params[-1].lower() == "base64"
    mime = params[0] or None
    check_media_type(mime, kind, f"The {kind} data: URL's type", param)
    if is_base64:
        data = _decode_base64(payload, policy, kind, param)
    else:
        data = unquote_to_bytes(payload)
    return MediaBytes(_capped(data, policy, f"The {kind} data: URL", param), mime, origin)


def _decode_base64(payload: str, policy: FetchPolicy, kind: MediaKind, param: str | None) -> bytes:
    text = re.sub(r"\s+", "", unquote(payload) if "%" in payload else payload)
    if len(text) * 3 // 4 > policy.max_bytes + 2:
        raise media_error(param, f"The {kind} data: URL holds more than the {policy.max_bytes:,} bytes allowed; "
                                 "send a smaller file.")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True)
    except (binascii.Error, ValueError):
        raise media_error(param, f"The {kind} data: URL is not valid base64; encode the file with base64.") from None


def _file_url_path(url: str, kind: MediaKind, param: str | None) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise media_error(param, f"The {kind} file:// URL names the host '{parts.netloc}'; only local files "
                                 "(file:///path) can be read.")
    return unquote(parts.path)


def read_local(path: str, kind: MediaKind, policy: FetchPolicy, param: str | None = None) -> MediaBytes:
    """A local file's bytes, if it lies inside ``allowed_local_media_path`` (symlinks resolved first)."""
    root = policy.allowed_local_media_path
    shown = path if len(path) <= 200 else path[:197] + "..."
    if root is None:
        raise media_error(param, f"'{shown}' is read as a local file, and local files are not allowed here. Send the "
                                 f"{kind} as an http(s) or data: URL (a server's operator can allow a folder with "
                                 "--allowed-local-media-path).")
    try:
        real = Path(path).resolve()
    except (OSError, ValueError) as exc:
        raise media_error(param, f"'{shown}' is not a valid file path ({exc}).") from None
    if not real.is_relative_to(root):
        raise media_error(param, f"The {kind} file '{shown}' is outside the allowed media folder '{root}'.")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise media_error(param, f"The {kind} file '{shown}' does not exist.") from None
    except OSError as exc:
        raise media_error(param, f"The {kind} file '{shown}' cannot be opened: {exc.strerror}.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise media_error(param, f"'{shown}' is not a regular file.")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > policy.max_bytes:
            raise media_error(param, f"The {kind} file '{shown}' is {info.st_size:,} bytes, more than the "
                                     f"{policy.max_bytes:,} allowed.")
        data = handle.read(policy.max_bytes + 1)
    return MediaBytes(_capped(data, policy, f"The {kind} file '{shown}'", param), None, f"the {kind} file '{shown}'")


def _capped(data: bytes, policy: FetchPolicy, what: str, param: str | None) -> bytes:
    if len(data) > policy.max_bytes:
        raise media_error(param, f"{what} is larger than the {policy.max_bytes:,} bytes allowed; send a smaller file.")
    if not data:
        raise media_error(param, f"{what} is empty.")
    return data
