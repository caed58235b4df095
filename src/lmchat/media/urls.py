"""Reading an http(s) media URL into a checked target, and resolving its host once into checked addresses.

Everything the fetcher sends comes from the one parse made here (scheme, host, port, path), so no second URL
parser can disagree with the checks.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from lmchat.media.addresses import IPAddress, embedded_ipv4, parse_ip_literal, refusal_reason
from lmchat.media.kinds import MediaKind, media_error
from lmchat.media.policy import FetchPolicy

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters kept as they are when the path is re-quoted: RFC 3986's reserved and unreserved ones, and '%'.
_SAFE_PATH = "/?#[]@!$&'()*+,;=-._~%:"
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


@dataclass(frozen=True)
class Target:
    """One checked http(s) URL: what is connected to and what is sent."""

    scheme: str
    host: str  # lower-case ASCII (IDNA) name, or a canonical IP address
    port: int
    path: str  # path and query, quoted, never empty
    address: IPAddress | None  # set when the URL names an IP address instead of a host name

    @property
    def shown(self) -> str:
        """The URL for messages: scheme, host, port and path, without the query (it may hold credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if _DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path.split('?', 1)[0]}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def check_url(url: str, kind: MediaKind, policy: FetchPolicy, param: str | None) -> Target:
    """Parse ``url`` and apply the policy's scheme and domain rules; any problem raises InvalidRequestError."""
    shown = _short(url)
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise media_error(param, f"The {kind} URL '{shown}' contains spaces or control characters; encode them.")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or scheme not in policy.allowed_schemes:
        allowed = ", ".join(sorted(s for s in policy.allowed_schemes if s in _DEFAULT_PORTS)) or "none"
        raise media_error(param, f"The {kind} URL '{shown}' uses '{scheme}:', which is not allowed here "
                                 f"(allowed network schemes: {allowed}).")
    if parts.username is not None or parts.password is not None:
        raise media_error(param, f"The {kind} URL '{shown}' carries a user name or password; media URLs cannot "
                                 "hold credentials (use a signed URL or send the file as a data: URL).")
    host, address = _checked_host(parts.hostname, shown, kind, param)
    try:
        port = _DEFAULT_PORTS[scheme] if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise media_error(param, f"The {kind} URL '{shown}' has an invalid port.")
    if not policy.domain_allowed(host):
        raise media_error(param, f"The {kind} URL '{shown}' is on '{host}', which is not one of the allowed media "
                                 f"domains ({', '.join(policy.allowed_domains or ())}).")
    path = quote(parts.path or "/", safe=_SAFE_PATH) + (f"?{quote(parts.query, safe=_SAFE_PATH)}" if parts.query else "")
    return Target(scheme, host, port, path, address)


def _checked_host(hostname: str | None, shown: str, kind: MediaKind, param: str | None) -> tuple[str, IPAddress | None]:
    if not hostname:
        raise media_error(param, f"The {kind} URL '{shown}' has no host.")
    try:
        address = parse_ip_literal(hostname)
    except ValueError as exc:
        raise media_error(param, f"The {kind} URL '{shown}' has an invalid host: {exc}.") from None
    if address is not None:
        return str(address), address
    try:
        name = hostname.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        name = ""
    if not _HOST_NAME.fullmatch(name):
        raise media_error(param, f"The {kind} URL '{shown}' has an invalid host name '{hostname}'.")
    return name, None


def resolve_target(target: Target, kind: MediaKind, policy: FetchPolicy, param: str | None) -> list[IPAddress]:
    """The addresses to connect to, resolved once; every one must be public unless the host is trusted.

    A name that resolves to several addresses is refused if any of them is not public: an attacker's DNS answer
    could otherwise mix a public address with an internal one.
    """
    if target.address is not None:
        addresses = [target.address]
    else:
        addresses = _resolve(target, kind, policy, param)
    if policy.domain_trusted(target.host):
        return addresses
    for address in addresses:
        reason = refusal_reason(address)
        if reason and not policy.network_allowed(embedded_ipv4(address) or address):
            via = "is" if target.address is not None else f"resolves to {address}, which is"
            raise media_error(
                param,
                f"The {kind} URL '{target.shown}' {via} {reason}; media is only fetched from public addresses. "
                "A server's operator can allow such hosts with --allowed-media-domains, allowed_private_networks or "
                "allow_private_addresses.",
            )
    return addresses


def _resolve(target: Target, kind: MediaKind, policy: FetchPolicy, param: str | None) -> list[IPAddress]:
    try:
        answers = list(policy.resolver(target.host, target.port))
    except OSError as exc:
        raise media_error(param, f"The host of the {kind} URL '{target.shown}' cannot be resolved ({exc}); "
                                 "check the URL.") from None
    addresses = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(answer))
        except ValueError:
            raise media_error(param, f"The resolver gave '{answer}' for '{target.host}', which is no IP address.") from None
    if not addresses:
        raise media_error(param, f"The host of the {kind} URL '{target.shown}' resolves to no address.")
    return addresses


def _short(url: str, limit: int = 120) -> str:
    """A URL for messages: no query string, at most ``limit`` characters."""
    base = url.split("?", 1)[0]
    return base if len(base) <= limit else base[: limit - 3] + "..."
