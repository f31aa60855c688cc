"""SSRF guard for webhook URLs, run when an endpoint is created and before every attempt.

`resolve_target` parses the URL the way httpx will send it, resolves the host once, checks
every address and returns a `Target` pinned to the first one; the sender then connects to
that address and never resolves the name again (DNS rebinding). Without `allow_private`
every address must be public (`is_global`) after unwrapping IPv4 addresses embedded in
IPv6 ones, because `ipaddress` calls `64:ff9b::7f00:1` global although a NAT64 gateway
turns it into 127.0.0.1 (RELIABILITY.md F6). Cloud metadata is refused even with
`allow_private`: no test or development set-up needs it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import httpx

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedTarget(ValueError):
    """The URL may not be called; the message says why, for a 422 or an attempt log."""


class UnresolvedHost(BlockedTarget):
    """The host name has no address (a DNS problem rather than a policy decision)."""


@dataclass(frozen=True)
class Target:
    url: str  # as given
    host: str  # ASCII (IDNA) host as httpx sends it, without brackets
    port: int
    scheme: str
    address: str  # the validated IP to connect to


class Resolver(Protocol):
    async def __call__(self, host: str, port: int, /) -> list[str]: ...


async def system_resolver(host: str, port: int, /) -> list[str]:
    """A and AAAA answers from the OS resolver, in its order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOSTNAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?")
# A last label that inet_aton() would read as a number (2130706433, 0x7f000001, 0177.1).
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")

_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata"})
_METADATA_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fd00:ec2::254/128")  # AWS, GCP, Azure, ECS all live there
)
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})
# Not global, but named here so the rule does not hang on a Python version's tables.
_NEVER_PUBLIC = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "100.64.0.0/10"))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


async def resolve_target(
    url: str, *, allow_private: bool, resolver: Resolver = system_resolver
) -> Target:
    """Validate `url` and pin it to one address; raises BlockedTarget with the reason."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise BlockedTarget(f"invalid URL: {exc}") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise BlockedTarget(f"scheme must be http or https, not {parsed.scheme or 'none'!r}")
    if parsed.userinfo:
        raise BlockedTarget("credentials in the URL are not allowed")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise BlockedTarget("the URL has no host")
    port = _DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port
    if not 0 < port < 65536:
        raise BlockedTarget(f"invalid port {port}")

    literal = _ip_literal(host)
    if literal is not None:
        answers = [str(literal)]
    else:
        name = host.rstrip(".")
        if name in _METADATA_NAMES:
            raise BlockedTarget(f"{host} is a cloud metadata service")
        if not allow_private and (name in _LOCAL_NAMES or name.endswith(".localhost")):
            raise BlockedTarget(f"{host} is the local machine")
        try:
            answers = await resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise UnresolvedHost(f"{host} does not resolve ({exc})") from None
        if not answers:
            raise UnresolvedHost(f"{host} does not resolve")

    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer)
        except ValueError:
            raise BlockedTarget(f"{host} resolved to a non-address {answer!r}") from None
        if (reason := _refusal(address, allow_private=allow_private)) is not None:
            via = "" if literal is not None else f"{host} resolves to {address}: "
            raise BlockedTarget(f"{via}{address} is {reason}")
        addresses.append(address)
    return Target(url, host, port, parsed.scheme, str(addresses[0]))


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host that is an IP literal stands for, or None for a host name."""
    if ":" in host:
        if "%" in host:
            raise BlockedTarget("IPv6 zone identifiers are not allowed")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise BlockedTarget(f"invalid IPv6 address {host!r}") from None
    if not _HOSTNAME.fullmatch(host):
        raise BlockedTarget(f"invalid host name {host!r}")
    if not _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        return None
    # The OS resolver hands such hosts to inet_aton, which reads 2130706433 and
    # 0x7f.1 as 127.0.0.1: read them the same way, or refuse what it would not read.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except OSError:
        raise BlockedTarget(f"{host!r} is neither a host name nor an IPv4 address") from None


def _refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why the address may not be called, or None."""
    inner = _unwrap(address)
    if any(inner in net for net in _METADATA_NETS) or any(address in n for n in _METADATA_NETS):
        return "a cloud metadata address"
    if allow_private:
        return None
    if (
        not inner.is_global
        or inner.is_multicast  # Python calls multicast global
        or any(inner in net for net in _NEVER_PUBLIC)
        or (inner.version == 6 and inner.is_reserved)  # e.g. ::/96, 64:ff9b:1::/48
    ):
        shown = "" if inner == address else f" (embeds {inner})"
        return f"not a public address{shown}"
    return None


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, NAT64 or 6to4 IPv6 address."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return address
