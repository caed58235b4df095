"""Which network addresses a media fetch may reach, and how a URL's host is read.

Python's own ``ipaddress.is_global`` varies between Python releases and calls multicast, NAT64 and 6to4 forms of
loopback "global", so the refused ranges are listed here, from IANA's special-purpose address registries. An IPv6
address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) is judged by the IPv4 address it
carries.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

_V4_REFUSED: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (where cloud metadata services live)"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)

_V6_REFUSED: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), why)
    for net, why in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/23", "an IETF protocol address (Teredo, ORCHID, ...)"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("5f00::/16", "a segment-routing address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)
_V6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_V4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")

# One part of an IPv4 address as C's inet_aton reads it: decimal, 0x-hex or 0-led octal.
_V4_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
_LAST_NUMBER = re.compile(r"^([0-9]+|0[xX][0-9a-fA-F]*)$")


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address (e.g. "a loopback address"), or None if it is one."""
    if isinstance(address, IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return f"{reason} (carried in the IPv6 address {address})" if reason else None
        for net, why in _V6_REFUSED:
            if address in net:
                return why
        if address not in _V6_GLOBAL_UNICAST:
            return "a reserved IPv6 address"
        return None
    for net, why in _V4_REFUSED:
        if address in net:
            return why
    return None


def embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), if it stands for one."""
    if not isinstance(address, IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _V4_COMPATIBLE and int(address) > 1):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form a C resolver accepts, or None when ``host`` is a name.

    ``127.0.0.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1`` and ``0x7f.1`` all mean 127.0.0.1;
    ``[::ffff:127.0.0.1]`` is read as IPv6. A host made only of number-like parts that is no valid address (e.g.
    ``999999999999``) raises ValueError rather than being sent to a resolver.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        return ipaddress.ip_address(text)  # ValueError for a malformed IPv6 literal
    if text.endswith("."):
        text = text[:-1]
    parts = text.split(".")
    if not _LAST_NUMBER.match(parts[-1]):
        return None  # a name: no top-level domain is a number (the URL standard's "ends in a number" rule)
    if len(parts) > 4 or not all(_V4_PART.match(part) for part in parts):
        raise ValueError(f"'{host}' ends in a number but is no valid IPv4 address")
    return IPv4Address(_inet_aton_value([_part_value(part) for part in parts], host))


def _part_value(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0":
        return int(part, 8)
    return int(part)


def _inet_aton_value(values: list[int], host: str) -> int:
    """inet_aton's rule: the last part fills all bytes the earlier parts (one byte each) leave."""
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (4 - len(leading)):
        raise ValueError(f"'{host}' is out of range for an IPv4 address")
    value = 0
    for v in leading:
        value = value * 256 + v
    return value * 256 ** (4 - len(leading)) + last
