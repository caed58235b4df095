"""FetchPolicy: where media may be read from, and the caps on reading it.

The defaults are safe for a server open to the internet: http(s) and data: URLs only, public addresses only, no
local files. The config/CLI fill it from ``--allowed-local-media-path``, ``--allowed-media-domains`` and friends.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmchat.errors import ConfigError

Resolver = Callable[[str, int], Sequence[str]]
"""``resolver(host, port)`` -> the host's addresses as strings; called once per host and URL (redirects included)."""

Scheme = Literal["http", "https", "data"]


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (getaddrinfo), in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class FetchPolicy(BaseModel):
    """Which media sources are allowed and how much reading them may cost."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    allowed_schemes: frozenset[Scheme] = Field(
        frozenset({"http", "https", "data"}), description="URL schemes accepted (local files: see the path)."
    )
    allowed_local_media_path: Path | None = Field(
        None, description="Folder whose files (plain paths or file:// URLs) may be read; empty: no local files."
    )
    allowed_domains: tuple[str, ...] | None = Field(
        None,
        description="If set, only these hosts are fetched ('*.example.com' for subdomains); they are trusted, "
        "so they may resolve to private addresses.",
    )
    allow_private_addresses: bool = Field(
        False, description="Fetch from loopback, private, link-local and other non-public addresses too."
    )
    allowed_private_networks: tuple[IPv4Network | IPv6Network, ...] = Field(
        (), description="Non-public address ranges that may be fetched from (e.g. an internal store's 10.1.2.0/24)."
    )
    max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Largest media file read, in bytes.")
    timeout_s: float = Field(30.0, gt=0, description="Longest a fetch may take in all (redirects included), s.")
    max_redirects: int = Field(5, ge=0, description="Most redirects followed for one URL.")
    resolver: Resolver = Field(system_resolver, exclude=True, description="Host name -> addresses.")
    ssl_context: ssl.SSLContext | None = Field(
        None, exclude=True, description="TLS settings (trusted CAs); empty: certifi's CA bundle."
    )
    user_agent: str = Field("lmchat-media/1", description="User-Agent header of media fetches.")

    @field_validator("allowed_local_media_path")
    @classmethod
    def _existing_folder(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        folder = Path(value).expanduser().resolve()
        if not folder.is_dir():
            raise ValueError(f"'{value}' is not an existing folder")
        return folder

    @field_validator("allowed_domains", mode="before")
    @classmethod
    def _normalise_domains(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = value.split(",")
        return tuple(normalise_domain(str(item)) for item in value if str(item).strip())

    @field_validator("allowed_private_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FetchPolicy:
        """Validate ``values``; an unknown key or a bad value raises ConfigError naming it."""
        from lmchat.config.validation import explain

        try:
            return cls(**values)
        except ValidationError as exc:
            raise explain(exc, kind="media fetch option", valid_names=cls.model_fields, error_cls=ConfigError) from None

    def domain_allowed(self, host: str) -> bool:
        """Whether ``host`` (lower-case ASCII) passes the domain list (always, when there is no list)."""
        if self.allowed_domains is None:
            return True
        return any(_matches(host, entry) for entry in self.allowed_domains)

    def domain_trusted(self, host: str) -> bool:
        """Whether ``host`` may resolve to a non-public address: named in the list, or private addresses allowed."""
        return self.allow_private_addresses or (self.allowed_domains is not None and self.domain_allowed(host))

    def network_allowed(self, address: IPv4Address | IPv6Address) -> bool:
        """Whether a non-public ``address`` lies in one of ``allowed_private_networks``."""
        return any(address.version == net.version and address in net for net in self.allowed_private_networks)


def normalise_domain(entry: str) -> str:
    """``' Example.COM. '`` -> ``'example.com'``, ``'*.bücher.de'`` -> ``'*.xn--bcher-kva.de'``, IPs canonical."""
    from lmchat.media.addresses import parse_ip_literal

    text = entry.strip().lower().rstrip(".")
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    if not name or any(char in name for char in "/@?# "):
        raise ValueError(f"'{entry}' is not a host name (write it without scheme, port or path: 'example.com')")
    try:
        address = parse_ip_literal(name)
    except ValueError as exc:
        raise ValueError(f"'{entry}' is not a host name: {exc}") from None
    if address is not None:
        return str(address)
    if ":" in name:
        raise ValueError(f"'{entry}' is not a host name (write it without a port: 'example.com')")
    try:
        ascii_name = name if name.isascii() else name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"'{entry}' is not a valid host name: {exc}") from None
    return ("*." if wildcard else "") + ascii_name


def _matches(host: str, entry: str) -> bool:
    if entry.startswith("*."):
        return host.endswith(entry[1:])
    return host == entry
