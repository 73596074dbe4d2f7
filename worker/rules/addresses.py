"""Which network addresses a webhook may reach: pure rules, no DNS and no sockets.

An address is *public* (always allowed), *private* (loopback, RFC 1918, unique-local and the
other ranges that are not globally routable: allowed only with
``TRACKER_WEBHOOK_ALLOW_PRIVATE=true`` or an entry of ``TRACKER_WEBHOOK_ALLOWLIST``) or
*forbidden* (link-local, cloud metadata, multicast, unspecified, broadcast, reserved: never
allowed, whatever the settings). ``outbound`` applies these rules to the address it is about to
connect to, after resolution; ``webhooks.validate_url`` applies them to a literal address at
enqueue.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Kind(Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    FORBIDDEN = "forbidden"


# Instance-metadata services hand out cloud credentials; most sit in link-local space (refused
# anyway), these do not: AWS's IPv6 endpoint is unique-local, Alibaba's is in the shared
# 100.64/10 range, Azure's WireServer is a public address.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200",
              "168.63.129.16")
)  # fmt: skip
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_-]{1,63})*")


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """The forms C's inet_aton (and so getaddrinfo) reads as IPv4: ``2130706433``, ``127.1``,
    ``0x7f.1``, ``0177.0.0.1``; None for anything else. One to four parts, each decimal, hex
    (``0x``) or octal (leading ``0``); the last part fills the remaining bytes."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        lowered = part.lower()
        try:
            if lowered.startswith("0x"):
                numbers.append(int(lowered[2:] or "0", 16))
            elif len(lowered) > 1 and lowered.startswith("0"):
                numbers.append(int(lowered, 8))
            elif lowered.isascii() and lowered.isdigit():
                numbers.append(int(lowered))
            else:
                return None
        except ValueError:
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def normalize_host(host: str) -> str:
    """Lower case, brackets and one trailing dot (the DNS root) removed."""
    return host.strip().strip("[]").rstrip(".").lower()


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names without DNS, in every form a resolver would accept
    (``[::ffff:a.b.c.d]``, ``2130706433``, ``0x7f.1``, ``127.1``), and ``localhost`` (RFC 6761
    keeps it, and every name under it, on loopback); None for a name that needs resolving."""
    name = normalize_host(host)
    if name == "localhost" or name.endswith(".localhost"):
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return _inet_aton(name)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries on to (mapped, NAT64 well-known prefix, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def classify(ip: IPAddress) -> tuple[Kind, str]:
    """(kind, what it is in a few words), judging an IPv6 address that carries an IPv4 one by
    the IPv4 address it reaches."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:  # the traffic ends at the IPv4 address
            kind, what = classify(inner)
            return kind, what if kind is Kind.PUBLIC else f"{what} (as {inner})"
    if ip in METADATA:
        return Kind.FORBIDDEN, "a cloud metadata address"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return Kind.FORBIDDEN, "an unspecified address"
    if ip.is_link_local:
        return Kind.FORBIDDEN, "a link-local address"
    if ip.is_multicast:
        return Kind.FORBIDDEN, "a multicast address"
    if ip == _BROADCAST:
        return Kind.FORBIDDEN, "the broadcast address"
    if ip.is_loopback:  # before "reserved": Python counts ::1 in the reserved ::/8
        return Kind.PRIVATE, "a loopback address"
    if ip.is_reserved or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return Kind.FORBIDDEN, "a reserved address"
    if ip.is_private:
        return Kind.PRIVATE, "a private address"
    if not ip.is_global:
        return Kind.PRIVATE, "an address that is not globally routable"
    return Kind.PUBLIC, "a public address"


def never_allowed(host: str) -> str | None:
    """Why a URL whose host is a literal forbidden address can never be posted to; else None."""
    ip = literal_address(host)
    if ip is None:
        return None
    kind, what = classify(ip)
    if kind is not Kind.FORBIDDEN:
        return None
    return f"{_named(host, ip)} is {what}, which is never allowed"


def _named(host: str, ip: IPAddress) -> str:
    """``0x7f.1 (127.0.0.1)``, ``hooks.example resolved to 10.0.0.5``: the host as the user
    wrote it, and the address it came to when that is not plain to see."""
    shown = normalize_host(host)
    if literal_address(host) != ip:
        return f"{shown} resolved to {ip}"
    if isinstance(ip, ipaddress.IPv4Address) and shown != str(ip):
        return f"{shown} ({ip})"
    return shown


def parse_allowlist(raw: str) -> tuple[tuple[IPNetwork, ...], frozenset[str]]:
    """``10.1.0.0/16, 192.168.5.7, hooks.internal``: networks and host names; ValueError naming
    an entry that is neither."""
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in re.split(r"[,\s]+", raw.strip()):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = normalize_host(entry)
        ip = literal_address(name)
        if ip is not None and not name.endswith("localhost"):
            networks.append(ipaddress.ip_network(ip))  # 127.1, 0x7f.0.0.1, ...
        elif _HOSTNAME.fullmatch(name):
            hosts.add(name)
        else:
            raise ValueError(f"{entry!r} is neither a network (10.0.0.0/8), an address nor a host")
    return tuple(networks), frozenset(hosts)


@dataclass(frozen=True)
class Refusal:
    """Why an address may not be connected to; ``permanent`` when no setting could allow it."""

    reason: str
    permanent: bool


@dataclass(frozen=True)
class AddressPolicy:
    """Which private destinations the operator allowed (public ones always are)."""

    allow_private: bool = False
    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, allow_private: bool, allowlist: str) -> AddressPolicy:
        networks, hosts = parse_allowlist(allowlist)
        return cls(allow_private, networks, hosts)

    def _listed(self, host: str, ip: IPAddress) -> bool:
        if normalize_host(host) in self.hosts:
            return True
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
            candidates.append(inner)
        return any(c in n for c in candidates for n in self.networks if c.version == n.version)

    def refusal(self, host: str, ip: IPAddress) -> Refusal | None:
        """None if ``host``, resolved to ``ip``, may be connected to; else why not."""
        kind, what = classify(ip)
        named = _named(host, ip)
        if kind is Kind.FORBIDDEN:
            return Refusal(f"{named} is {what}, which is never allowed", permanent=True)
        if kind is Kind.PRIVATE and not (self.allow_private or self._listed(host, ip)):
            return Refusal(
                f"{named} is {what}, allowed only with TRACKER_WEBHOOK_ALLOW_PRIVATE=true "
                "or an entry in TRACKER_WEBHOOK_ALLOWLIST",
                permanent=False,
            )
        return None
