"""Fetching media over http(s) without the SSRF holes (server-side request forgery).

Each URL (and each redirect) is parsed and checked (``urls.py``), its host is resolved ONCE and every address is
checked, and the connection goes to exactly that address: httpcore's network backend is replaced by one that
connects to the pinned address whatever name it is asked for, while the request keeps the real Host header and TLS
checks the certificate against the real name (SNI). A second DNS answer (rebinding) is never asked for. The whole
fetch shares one deadline that caps every connect, TLS handshake and read, so a slowly dripping body cannot outlast
it; the body is streamed and abandoned as soon as it passes the byte cap, whatever Content-Length said.
"""

from __future__ import annotations

import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpcore

from lmchat.media.kinds import MediaKind, check_media_type, media_error
from lmchat.media.policy import FetchPolicy
from lmchat.media.urls import Target, check_url, resolve_target

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Fetched:
    """A fetched body, its declared Content-Type and the URL it finally came from (query left out)."""

    data: bytes
    content_type: str | None
    url: str


class _DeadlineExceeded(Exception):
    pass


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def clamp(self, timeout: float | None) -> float:
        """The time one network operation may take: what is left of the deadline, or less."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise _DeadlineExceeded
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read, write and TLS handshake ends at the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clamp(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._deadline.clamp(timeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the one checked address; any other host or port (or a Unix socket) is refused."""

    def __init__(self, target: Target, address: str, deadline: _Deadline) -> None:
        self._target, self._address, self._deadline = target, address, deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        if (host, port) != (self._target.host, self._target.port):
            raise httpcore.ConnectError(f"refusing to connect to unchecked {host}:{port}")
        stream = self._inner.connect_tcp(self._address, port, self._deadline.clamp(timeout), local_address,
                                         socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("media fetches never use Unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self._deadline.clamp(None)))


@dataclass(frozen=True)
class _Redirect:
    location: str


def fetch_url(url: str, kind: MediaKind, policy: FetchPolicy, *, param: str | None = None) -> Fetched:
    """GET ``url`` under ``policy``: checked, pinned, redirects re-checked, capped in bytes and time."""
    deadline = _Deadline(policy.timeout_s)
    target = check_url(url, kind, policy, param)
    first = target.shown
    try:
        for hop in range(policy.max_redirects + 1):
            if hop:
                target = check_url(location, kind, policy, param)
            addresses = _resolve_in_time(target, kind, policy, param, deadline)
            outcome = _get_any(target, [str(a) for a in addresses], kind, policy, deadline, param)
            if isinstance(outcome, Fetched):
                return outcome
            location = urljoin(f"{target.scheme}://{target.host_header}{target.path}", outcome.location)
    except (_DeadlineExceeded, httpcore.TimeoutException):
        raise media_error(param, f"Fetching the {kind} at '{target.shown}' took longer than the "
                                 f"{policy.timeout_s:g} s allowed; use a faster server, a smaller file, or send it "
                                 "as a data: URL.") from None
    raise media_error(param, f"The {kind} URL '{first}' redirects more than {policy.max_redirects} times; "
                             "give the final URL.")


_RESOLVERS: ThreadPoolExecutor | None = None
_RESOLVERS_LOCK = threading.Lock()


def _resolve_in_time(target: Target, kind: MediaKind, policy: FetchPolicy, param: str | None,
                     deadline: _Deadline) -> list:
    """resolve_target on a worker thread, waited for no longer than the deadline (getaddrinfo cannot be cut)."""
    global _RESOLVERS
    if target.address is not None:
        return resolve_target(target, kind, policy, param)
    with _RESOLVERS_LOCK:
        if _RESOLVERS is None:
            _RESOLVERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lmchat-media-dns")
    future = _RESOLVERS.submit(resolve_target, target, kind, policy, param)
    try:
        return future.result(timeout=deadline.clamp(None))
    except FutureTimeout:
        raise _DeadlineExceeded from None


def _get_any(target: Target, addresses: list[str], kind: MediaKind, policy: FetchPolicy, deadline: _Deadline,
             param: str | None) -> Fetched | _Redirect:
    """GET from the first address that accepts the connection (all of them were checked)."""
    problem: Exception | None = None
    for address in addresses:
        try:
            return _get(target, address, kind, policy, deadline, param)
        except httpcore.ConnectError as exc:
            problem = exc
    raise media_error(param, f"Could not connect to '{target.host}' for the {kind} at '{target.shown}' "
                             f"({problem}); check the URL or try later.")


def _get(target: Target, address: str, kind: MediaKind, policy: FetchPolicy, deadline: _Deadline,
         param: str | None) -> Fetched | _Redirect:
    backend = _PinnedBackend(target, address, deadline)
    url = httpcore.URL(scheme=target.scheme, host=target.host, port=target.port, target=target.path)
    headers = [("Host", target.host_header), ("User-Agent", policy.user_agent), ("Accept", f"{kind}/*, */*;q=0.5"),
               ("Accept-Encoding", "identity")]
    context = policy.ssl_context or _default_ssl_context()
    try:
        with httpcore.ConnectionPool(ssl_context=context, network_backend=backend, max_connections=1) as pool:
            with pool.stream("GET", url, headers=headers) as response:
                return _answer(response, target, kind, policy, param)
    except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError) as exc:
        raise media_error(param, f"The server of the {kind} at '{target.shown}' broke off or sent a malformed "
                                 f"response ({exc or type(exc).__name__}); try again or use another URL.") from None


def _answer(response: httpcore.Response, target: Target, kind: MediaKind, policy: FetchPolicy,
            param: str | None) -> Fetched | _Redirect:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}
    origin = f"The {kind} at '{target.shown}'"
    if response.status in _REDIRECTS:
        if "location" not in headers:
            raise media_error(param, f"{origin} answered a redirect ({response.status}) without a Location.")
        return _Redirect(headers["location"])
    if response.status != 200:
        raise media_error(param, f"{origin} could not be fetched: the server answered HTTP {response.status}.")
    check_media_type(headers.get("content-type"), kind, f"{origin} (Content-Type)", param)
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise media_error(param, f"{origin} came compressed ('{encoding}'), which is not accepted for media.")
    declared = headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise media_error(param, f"{origin} is {int(declared):,} bytes, more than the {policy.max_bytes:,} bytes allowed; "
                                 "send a smaller file.")
    data = _read_capped(response.iter_stream(), policy.max_bytes, origin, param)
    return Fetched(data, headers.get("content-type"), target.shown)


def _read_capped(chunks: Iterable[bytes], max_bytes: int, origin: str, param: str | None) -> bytes:
    """The body, or an error as soon as it passes ``max_bytes`` (the rest is never read)."""
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise media_error(param, f"{origin} is larger than the {max_bytes:,} bytes allowed; send a smaller file.")
        parts.append(chunk)
    return b"".join(parts)


_SSL_CONTEXT: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    """certifi's CA bundle, as httpx uses, made once."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import certifi

        _SSL_CONTEXT = ssl.create_default_context(cafile=certifi.where())
    return _SSL_CONTEXT
