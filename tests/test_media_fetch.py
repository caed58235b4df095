"""Safe media fetching (lmchat.media.fetch/urls/policy) against a real HTTP(S) server on 127.0.0.1.

No packet may leave 127.0.0.1: an audit hook (active for this module's tests) refuses any connect, send or name
lookup that is not loopback, and records it, so a test that would reach out fails instead. Names are resolved by a
resolver stub handed to the policy (no socket is monkeypatched); "media.test" and friends exist in no DNS, so a
fetch that works proves the connection went to the pinned address.
"""

from __future__ import annotations

import http.server
import io
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable

import pytest

from lmchat.errors import ConfigError, InvalidRequestError
from lmchat.media import FetchPolicy, MediaLoader, fetch_url, system_resolver
from lmchat.media.policy import normalise_domain

pytest.importorskip("PIL")  # the media extra; without it this module cannot run at all
from PIL import Image  # noqa: E402

# --- the network guard ------------------------------------------------------------------------------------------
_GUARD: dict = {"active": False, "violations": []}
_LOOPBACK_NAMES = {"127.0.0.1", "localhost"}


class NetworkEscape(RuntimeError):
    """Raised (and recorded) when a test tries to reach anything but 127.0.0.1."""


def _audit(event: str, args: tuple) -> None:
    if not _GUARD["active"]:
        return
    target = None
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg") and len(args) > 1:
        address = args[1]
        if isinstance(address, tuple) and address and address[0] != "127.0.0.1":
            target = address
    elif event == "socket.getaddrinfo" and args[0] not in _LOOPBACK_NAMES | {None}:
        target = args[0]
    elif event in ("socket.gethostbyname", "socket.gethostbyaddr") and args[0] not in _LOOPBACK_NAMES:
        target = args[0]
    if target is not None:
        _GUARD["violations"].append((event, target))
        raise NetworkEscape(f"{event} to {target!r}: tests may only reach 127.0.0.1")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def loopback_only():
    _GUARD["active"], _GUARD["violations"] = True, []
    yield _GUARD["violations"]
    _GUARD["active"] = False
    assert _GUARD["violations"] == [], f"a test tried to leave 127.0.0.1: {_GUARD['violations']}"


def test_the_guard_blocks_lookups_and_connections_off_loopback(loopback_only):
    with pytest.raises(NetworkEscape):
        socket.getaddrinfo("example.com", 80)
    with socket.socket() as sock, pytest.raises(NetworkEscape):
        sock.connect(("10.255.255.1", 9))
    assert loopback_only == [("socket.getaddrinfo", "example.com"), ("socket.connect", ("10.255.255.1", 9))]
    loopback_only.clear()


# --- the local server -------------------------------------------------------------------------------------------
def png_bytes(color=(200, 30, 40), size=(40, 30), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


PNG = png_bytes()
NOISE_PNG = (lambda: (buffer := io.BytesIO(), Image.effect_noise((200, 200), 80).convert("RGB").save(buffer, "PNG"),
                      buffer.getvalue())[-1])()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict[str, Callable] = {}

    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Host")))
        route = self.routes.get(self.path.split("?", 1)[0])
        try:
            if route is None:
                self.reply(404, b"not found", "text/plain")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def reply(self, status: int, body: bytes, content_type: str | None = "image/png", **headers: str) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        headers = {name.replace("_", "-"): value for name, value in headers.items()}
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:  # HTTPServer's own looks the host name up (getfqdn): not here
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


def _route(path):
    def register(function):
        Handler.routes[path] = function
        return function

    return register


@_route("/cat.png")
def _cat(h):
    h.reply(200, PNG)


@_route("/octet")
def _octet(h):
    h.reply(200, PNG, "application/octet-stream")


@_route("/untyped")
def _untyped(h):
    h.reply(200, PNG, None)


@_route("/page.html")
def _html(h):
    h.reply(200, b"<html>login</html>", "text/html; charset=utf-8")


@_route("/gzip")
def _gzip(h):
    h.reply(200, PNG, Content_Encoding="gzip")


@_route("/redirect")
def _redirect(h):  # /redirect?to=URL
    from urllib.parse import parse_qs, urlsplit

    h.reply(302, b"", None, Location=parse_qs(urlsplit(h.path).query)["to"][0])


@_route("/hop")
def _hop(h):  # /hop?n=N redirects N more times, then to the image
    n = int(h.path.split("n=", 1)[1])
    h.reply(307, b"", None, Location="/cat.png" if n == 0 else f"/hop?n={n - 1}")


@_route("/loop")
def _loop(h):
    h.reply(301, b"", None, Location="/loop")


@_route("/big-declared")
def _big_declared(h):  # declares more than the cap; would send it all if asked
    h.reply(200, b"x" * 1000, Content_Length=str(50_000_000))


@_route("/big-chunked")
def _big_chunked(h):
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for _ in range(200):  # 200 x 64 KiB, far past the test cap
        h.wfile.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
    h.wfile.write(b"0\r\n\r\n")


@_route("/big-unframed")
def _big_unframed(h):  # no Content-Length, no chunking: the body runs until the server closes
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Connection", "close")
    h.end_headers()
    for _ in range(200):
        h.wfile.write(b"x" * 0x10000)
    h.close_connection = True


@_route("/lie-short")
def _lie_short(h):  # says 1000 bytes, then sends megabytes
    h.reply(200, NOISE_PNG[:1000] + b"x" * 5_000_000, Content_Length="1000")


@_route("/lie-long")
def _lie_long(h):  # says 5000 bytes, sends 100 and hangs up
    h.reply(200, PNG[:100], Content_Length="5000")
    h.close_connection = True


@_route("/drip")
def _drip(h):  # a valid header, then one byte every 50 ms for 10 s
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Content-Length", "200")
    h.end_headers()
    for i in range(200):
        h.wfile.write(PNG[i % len(PNG):][:1])
        h.wfile.flush()
        time.sleep(0.05)


@_route("/stall")
def _stall(h):  # never answers
    time.sleep(5)
    h.reply(200, PNG)


@_route("/missing")
def _missing(h):
    h.reply(404, b"no such image", "text/plain")


@pytest.fixture(scope="module")
def running_server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(running_server):
    """The module's plain-HTTP server, with its log of requests (path, Host header) emptied."""
    running_server.seen.clear()
    return running_server


@pytest.fixture
def base(server):
    return f"http://127.0.0.1:{server.server_port}"


class StubResolver:
    """Answers from a table and counts the questions; an unknown name fails like a DNS miss."""

    def __init__(self, table: dict[str, list[str]], delay: float = 0.0):
        self.table, self.calls, self.delay = table, [], delay

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        time.sleep(self.delay)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


def loopback_policy(**overrides) -> FetchPolicy:
    """media.test -> 127.0.0.1, trusted by the 127.0.0.1/32 range (not by allow_private_addresses)."""
    overrides.setdefault("resolver", StubResolver({"media.test": ["127.0.0.1"]}))
    overrides.setdefault("allowed_private_networks", ("127.0.0.1/32",))
    return FetchPolicy(**overrides)


def image_from(fetched) -> Image.Image:
    return Image.open(io.BytesIO(fetched.data))


# --- fetching that works ----------------------------------------------------------------------------------------
def test_an_explicitly_allowed_loopback_server_is_fetched(server, base):
    fetched = fetch_url(f"{base}/cat.png", "image", FetchPolicy(allow_private_addresses=True))
    assert fetched.data == PNG and fetched.content_type == "image/png"
    assert image_from(fetched).getpixel((0, 0)) == (200, 30, 40)
    assert server.seen == [("/cat.png", f"127.0.0.1:{server.server_port}")]


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected(server):
    resolver = StubResolver({"media.test": ["127.0.0.1"]})
    fetched = fetch_url(f"http://media.test:{server.server_port}/cat.png", "image", loopback_policy(resolver=resolver))
    assert fetched.data == PNG
    assert resolver.calls == ["media.test"]  # asked once; the system resolver never (the guard would have failed)
    assert server.seen[-1] == ("/cat.png", f"media.test:{server.server_port}")  # the real Host header went out


def test_the_loader_fetches_and_decodes(server):
    loader = MediaLoader(policy=loopback_policy())
    image = loader.load_image(f"http://media.test:{server.server_port}/cat.png?size=big#frag", param="images[0]")
    assert image.mode == "RGB" and image.getpixel((3, 3)) == (200, 30, 40)
    assert server.seen[-1][0] == "/cat.png?size=big"  # the query is sent, the fragment is not


@pytest.mark.parametrize("path", ["/octet", "/untyped"])
def test_generic_or_missing_content_types_are_left_to_the_decoder(server, path):
    loader = MediaLoader(policy=loopback_policy())
    assert loader.load_image(f"http://media.test:{server.server_port}{path}").size == (40, 30)


def test_redirects_within_the_cap_are_followed(server):
    policy = loopback_policy(max_redirects=3)
    assert fetch_url(f"http://media.test:{server.server_port}/hop?n=2", "image", policy).data == PNG
    assert [path for path, _ in server.seen[-4:]] == ["/hop?n=2", "/hop?n=1", "/hop?n=0", "/cat.png"]


def test_the_system_resolver_reads_localhost_without_the_network():
    assert "127.0.0.1" in system_resolver("localhost", 80)


# --- addresses that are refused ---------------------------------------------------------------------------------
@pytest.mark.parametrize("host", [
    "127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.0.0.1", "[::1]", "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]", "0.0.0.0", "0", "[::]", "169.254.169.254", "[64:ff9b::a9fe:a9fe]", "10.0.0.1",
])
def test_ip_literals_of_non_public_addresses_are_refused_in_any_spelling(server, host, loopback_only):
    with pytest.raises(InvalidRequestError) as info:
        fetch_url(f"http://{host}:{server.server_port}/cat.png", "image", FetchPolicy(), param="images[0]")
    assert info.value.param == "images[0]"
    assert "only fetched from public addresses" in info.value.message
    assert server.seen == [] and loopback_only == []  # refused before any connection


@pytest.mark.parametrize("answer, reason", [
    (["10.1.2.3"], "a private address"),
    (["192.168.0.10"], "a private address"),
    (["172.16.5.4"], "a private address"),
    (["127.0.0.1"], "a loopback address"),
    (["169.254.169.254"], "link-local address (where cloud metadata"),
    (["100.64.0.1"], "carrier-grade NAT"),
    (["0.0.0.0"], "unspecified"),
    (["224.0.0.251"], "multicast"),
    (["240.0.0.1"], "reserved"),
    (["255.255.255.255"], "reserved"),
    (["::1"], "a loopback address"),
    (["::"], "the unspecified address"),
    (["fe80::1"], "link-local"),
    (["fd00:ec2::254"], "unique local"),
    (["ff02::1"], "multicast"),
    (["::ffff:10.0.0.1"], "a private address (carried in the IPv6 address"),
    (["::ffff:169.254.169.254"], "link-local"),
    (["64:ff9b::7f00:1"], "loopback address (carried"),
    (["64:ff9b:1::a00:1"], "local-use NAT64"),
    (["2002:a9fe:a9fe::1"], "link-local address (where cloud metadata services live) (carried"),
    (["2001:0:4136:e378:8000:63bf:3fff:fdd2"], "Teredo"),
    (["93.184.215.14", "10.0.0.1"], "a private address"),  # one bad answer spoils the lot
])
def test_names_resolving_to_non_public_addresses_are_refused(answer, reason, loopback_only):
    resolver = StubResolver({"evil.test": answer})
    with pytest.raises(InvalidRequestError) as info:
        fetch_url("http://evil.test/x.png", "image", FetchPolicy(resolver=resolver), param="messages[0].content[1]")
    assert reason in info.value.message and "resolves to" in info.value.message
    assert info.value.param == "messages[0].content[1]"
    assert resolver.calls == ["evil.test"] and loopback_only == []


def test_an_allowed_private_network_admits_only_its_own_addresses():
    policy = FetchPolicy(resolver=StubResolver({"a.test": ["10.1.2.3"]}), allowed_private_networks="10.9.0.0/16")
    with pytest.raises(InvalidRequestError, match="a private address"):
        fetch_url("http://a.test/x.png", "image", policy)


@pytest.mark.parametrize("location", [
    "http://metadata.test/latest/meta-data/",  # -> 169.254.169.254
    "http://internal.test/admin",  # -> 10.0.0.7
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://0x0a000001/",  # 10.0.0.1 in hex
])
def test_every_redirect_is_checked_again(server, location):
    resolver = StubResolver({"media.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"],
                             "internal.test": ["10.0.0.7"]})
    url = f"http://media.test:{server.server_port}/redirect?to={location}"
    with pytest.raises(InvalidRequestError, match="only fetched from public addresses"):
        fetch_url(url, "image", loopback_policy(resolver=resolver))
    assert [path.split("?")[0] for path, _ in server.seen] == ["/redirect"]


@pytest.mark.parametrize("location, message", [
    ("file:///etc/passwd", "uses 'file:'"),
    ("gopher://media.test/", "uses 'gopher:'"),
    ("data:image/png;base64,AAAA", "uses 'data:'"),
])
def test_redirects_to_other_schemes_are_refused(server, location, message):
    url = f"http://media.test:{server.server_port}/redirect?to={location}"
    with pytest.raises(InvalidRequestError, match=message):
        fetch_url(url, "image", loopback_policy())


def test_the_redirect_count_is_capped(server):
    with pytest.raises(InvalidRequestError, match="redirects more than 2 times"):
        fetch_url(f"http://media.test:{server.server_port}/hop?n=2", "image", loopback_policy(max_redirects=2))
    with pytest.raises(InvalidRequestError, match="redirects more than 5 times"):
        fetch_url(f"http://media.test:{server.server_port}/loop", "image", loopback_policy())
    assert len([p for p, _ in server.seen if p == "/loop"]) == 6


# --- the domain list, schemes and URLs ----------------------------------------------------------------------------
def test_the_domain_list_restricts_and_trusts(server):
    resolver = StubResolver({"media.test": ["127.0.0.1"], "cdn.media.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    policy = FetchPolicy(resolver=resolver, allowed_domains="Media.Test., *.media.test")
    assert policy.allowed_domains == ("media.test", "*.media.test")
    for host in ("media.test", "cdn.media.test"):  # listed: fetched although they resolve to loopback
        assert fetch_url(f"http://{host}:{server.server_port}/cat.png", "image", policy).data == PNG
    with pytest.raises(InvalidRequestError, match="not one of the allowed media domains"):
        fetch_url(f"http://other.test:{server.server_port}/cat.png", "image", policy)
    with pytest.raises(InvalidRequestError, match="not one of the allowed media domains"):
        fetch_url(f"http://media.test:{server.server_port}/redirect?to=http://other.test/x", "image", policy)
    assert "other.test" not in resolver.calls  # refused before resolving


@pytest.mark.parametrize("url, message", [
    ("ftp://media.test/x.png", "uses 'ftp:'"),
    ("http://user:secret@media.test/x.png", "user name or password"),
    ("http:///x.png", "has no host"),
    ("http://999999999999/x.png", "invalid host"),
    ("http://1.2.3.4.5/x.png", "invalid host"),
    ("http://media.test:99999/x.png", "invalid port"),
    ("http://media.test:0/x.png", "invalid port"),
    ("http://media.test%00.evil/x.png", "invalid host name"),
    ("http://ex!ample.test/x.png", "invalid host name"),
    ("http://media.test/a b.png", "spaces or control characters"),
])
def test_malformed_or_forbidden_urls_are_refused(url, message):
    resolver = StubResolver({})
    with pytest.raises(InvalidRequestError, match=message):
        fetch_url(url, "image", FetchPolicy(resolver=resolver))
    assert resolver.calls == []
    assert "secret" not in message


def test_a_scheme_left_out_of_the_policy_is_refused(server):
    with pytest.raises(InvalidRequestError, match="uses 'http:', which is not allowed here"):
        fetch_url(f"http://media.test:{server.server_port}/cat.png", "image", loopback_policy(allowed_schemes={"https"}))


def test_resolver_failures_are_clear():
    with pytest.raises(InvalidRequestError, match="cannot be resolved"):
        fetch_url("http://nowhere.test/x.png", "image", FetchPolicy(resolver=StubResolver({})))
    with pytest.raises(InvalidRequestError, match="resolves to no address"):
        fetch_url("http://empty.test/x.png", "image", FetchPolicy(resolver=StubResolver({"empty.test": []})))
    with pytest.raises(InvalidRequestError, match="no IP address"):
        fetch_url("http://odd.test/x.png", "image", FetchPolicy(resolver=StubResolver({"odd.test": ["banana"]})))


def test_a_closed_port_is_a_clear_connection_error():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(InvalidRequestError, match="Could not connect to 'media.test'"):
        fetch_url(f"http://media.test:{port}/x.png", "image", loopback_policy())


# --- sizes, time and types ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/big-declared", "/big-chunked", "/big-unframed"])
def test_bodies_past_the_byte_cap_are_abandoned(server, path):
    start = time.monotonic()
    with pytest.raises(InvalidRequestError, match="100,000 bytes allowed") as info:
        fetch_url(f"http://media.test:{server.server_port}{path}", "image", loopback_policy(max_bytes=100_000))
    assert "send a smaller file" in info.value.message
    assert time.monotonic() - start < 5


def test_a_content_length_that_lies_low_reads_no_more_than_it_said(server):
    policy = loopback_policy(max_bytes=2000)
    fetched = fetch_url(f"http://media.test:{server.server_port}/lie-short", "image", policy)
    assert fetched.data == NOISE_PNG[:1000]  # the megabytes after the declared length are never read
    with pytest.raises(InvalidRequestError, match="broken or truncated"):
        MediaLoader(policy=policy).load_image(f"http://media.test:{server.server_port}/lie-short")


def test_a_content_length_that_lies_high_is_a_broken_response(server):
    with pytest.raises(InvalidRequestError, match="broke off or sent a malformed response"):
        fetch_url(f"http://media.test:{server.server_port}/lie-long", "image", loopback_policy())


@pytest.mark.parametrize("path", ["/drip", "/stall"])
def test_slow_servers_hit_the_total_time_cap(server, path):
    start = time.monotonic()
    with pytest.raises(InvalidRequestError, match="took longer than the 0.6 s allowed"):
        fetch_url(f"http://media.test:{server.server_port}{path}", "image", loopback_policy(timeout_s=0.6))
    assert 0.5 < time.monotonic() - start < 1.5


def test_a_slow_resolver_counts_against_the_time_cap():
    start = time.monotonic()
    with pytest.raises(InvalidRequestError, match="took longer than the 0.3 s allowed"):
        fetch_url("http://slow.test/x.png", "image", FetchPolicy(timeout_s=0.3,
                                                               resolver=StubResolver({"slow.test": ["127.0.0.1"]}, 2)))
    assert time.monotonic() - start < 1.0


def test_the_content_type_must_match_the_kind(server):
    port = server.server_port
    with pytest.raises(InvalidRequestError, match="is 'text/html', not an image"):
        fetch_url(f"http://media.test:{port}/page.html", "image", loopback_policy())
    with pytest.raises(InvalidRequestError, match="is 'image/png', not an audio"):
        fetch_url(f"http://media.test:{port}/cat.png", "audio", loopback_policy())
    with pytest.raises(InvalidRequestError, match="is 'image/png', not a video"):
        fetch_url(f"http://media.test:{port}/cat.png", "video", loopback_policy())


def test_error_statuses_and_compressed_bodies_are_refused(server):
    port = server.server_port
    with pytest.raises(InvalidRequestError, match="answered HTTP 404"):
        fetch_url(f"http://media.test:{port}/missing", "image", loopback_policy())
    with pytest.raises(InvalidRequestError, match="compressed"):
        fetch_url(f"http://media.test:{port}/gzip", "image", loopback_policy())


# --- TLS: the pinned address, the real name -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server():
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    certificate = authority.issue_cert("media.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.seen = []
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    client = ssl.create_default_context()
    authority.configure_trust(client)
    yield httpd, client
    httpd.shutdown()
    httpd.server_close()


def test_https_checks_the_certificate_against_the_real_name(tls_server):
    httpd, client = tls_server
    resolver = StubResolver({"media.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    policy = FetchPolicy(resolver=resolver, ssl_context=client, allowed_domains=("media.test", "other.test"))
    fetched = fetch_url(f"https://media.test:{httpd.server_port}/cat.png", "image", policy)
    assert fetched.data == PNG and httpd.seen[-1] == ("/cat.png", f"media.test:{httpd.server_port}")
    with pytest.raises(InvalidRequestError, match="Could not connect.*(certificate|hostname)"):
        fetch_url(f"https://other.test:{httpd.server_port}/cat.png", "image", policy)


def test_https_with_the_default_trust_refuses_an_unknown_authority(tls_server):
    httpd, _ = tls_server
    policy = FetchPolicy(resolver=StubResolver({"media.test": ["127.0.0.1"]}), allowed_domains=("media.test",))
    with pytest.raises(InvalidRequestError, match="certificate verify failed"):
        fetch_url(f"https://media.test:{httpd.server_port}/cat.png", "image", policy)


# --- the policy object ----------------------------------------------------------------------------------------------
def test_policy_defaults_are_the_safe_ones():
    policy = FetchPolicy()
    assert policy.allowed_schemes == {"http", "https", "data"}
    assert policy.allowed_local_media_path is None and policy.allowed_domains is None
    assert not policy.allow_private_addresses and policy.allowed_private_networks == ()
    assert (policy.max_bytes, policy.timeout_s, policy.max_redirects) == (64 * 1024 * 1024, 30.0, 5)
    assert policy.resolver is system_resolver


def test_policy_values_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'max_bytes'"):
        FetchPolicy.from_dict({"max_byte": 10})
    with pytest.raises(ConfigError, match="allowed_local_media_path.*not an existing folder"):
        FetchPolicy.from_dict({"allowed_local_media_path": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="allowed_schemes"):
        FetchPolicy.from_dict({"allowed_schemes": ["http", "file"]})
    with pytest.raises(ConfigError, match="allowed_private_networks"):
        FetchPolicy.from_dict({"allowed_private_networks": "10.0.0.0/33"})
    assert FetchPolicy.from_dict({"allowed_local_media_path": str(tmp_path)}).allowed_local_media_path == tmp_path.resolve()


@pytest.mark.parametrize("entry, normal", [
    (" Example.COM. ", "example.com"), ("*.Example.com", "*.example.com"), ("bücher.de", "xn--bcher-kva.de"),
    ("2130706433", "127.0.0.1"), ("[::1]", "::1"),
])
def test_domain_entries_are_normalised(entry, normal):
    assert normalise_domain(entry) == normal


@pytest.mark.parametrize("entry", ["http://example.com", "example.com/x", "example.com:8080", "user@example.com"])
def test_domain_entries_with_more_than_a_host_are_refused(entry):
    with pytest.raises(ConfigError, match="allowed_domains"):
        FetchPolicy.from_dict({"allowed_domains": [entry]})
