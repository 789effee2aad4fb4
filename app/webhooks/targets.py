"""Webhook targets, checked against server-side request forgery (SSRF).

A webhook makes the service send requests to a URL a tenant chose, from inside the network the
service runs in. So a target must be https (http only with TUNECOST_WEBHOOK_ALLOW_HTTP), carry
no credentials, and every address its host resolves to must be public: loopback, private
(RFC 1918, unique-local), link-local (cloud metadata at 169.254.169.254), shared (100.64/10),
reserved, multicast and unspecified addresses are refused, also when a public-looking name
resolves to one (checked again at every delivery: DNS answers change). The delivery then
connects to the very address it checked (the name is only sent as Host and TLS SNI), so a
second, different DNS answer cannot redirect it. Redirects are not followed. All of this is
relaxed by TUNECOST_WEBHOOK_ALLOW_PRIVATE_TARGETS, for development and tests.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"https": 443, "http": 80}
MAX_URL_CHARS = 2000  # webhook_subscriptions.url


class TargetRefused(ValueError):
    """The URL may not be a webhook target; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect and what to ask for."""

    scheme: str
    host: str  # as written (a name, or an address without brackets)
    port: int
    path: str  # path and query, at least "/"

    @property
    def netloc(self) -> str:
        """host[:port] as the Host header carries it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_at(self, address: IPAddress) -> str:
        """The URL with the host replaced by `address` (what is connected to)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse(url: str, settings: Settings) -> Target:
    """The parts of `url`, or TargetRefused when its form is not acceptable."""
    if len(url) > MAX_URL_CHARS:
        raise TargetRefused(f"a webhook URL is at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a URL: {exc}") from None
    allowed = ("https", "http") if settings.webhook_allow_http else ("https",)
    if parts.scheme not in allowed:
        raise TargetRefused(f"the URL must start with {' or '.join(s + '://' for s in allowed)}")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL may not carry credentials (user:password@)")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.fragment:
        raise TargetRefused("the URL may not have a #fragment")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], path)


def is_public(address: IPAddress) -> bool:
    """Whether `address` is a public unicast address (and not one mapped onto a private one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


def resolve(target: Target, settings: Settings) -> list[IPAddress]:
    """Every address the target's host resolves to, all allowed; TargetRefused otherwise."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {target.host!r} does not resolve ({exc})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise TargetRefused(f"the host {target.host!r} has no address")
    if not settings.webhook_allow_private_targets:
        private = [a for a in addresses if not is_public(a)]
        if private:
            raise TargetRefused(
                f"the host {target.host!r} resolves to {private[0]}, which is not a public "
                "address; webhooks go to public HTTPS endpoints only"
            )
    return addresses


def check(url: str, settings: Settings) -> tuple[Target, list[IPAddress]]:
    """`url` parsed and resolved, every address allowed."""
    target = parse(url, settings)
    return target, resolve(target, settings)
