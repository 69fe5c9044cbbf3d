"""Who a request comes from, for per-client rate limits and logs.

A client is its API key when it presents an accepted one, else its network
address. Only accepted keys count: in open mode, or with a wrong key, a client
that could name itself by any string it likes would dodge its rate limit by
sending a new one with each request.

Guarantees:

- A key-based id is ``key-`` and the first 16 hex digits of a domain-separated
  SHA-256 of the key: stable across requests and replicas (so logs and limits
  line up), and never the key itself. Keys are high-entropy tokens, so the
  prefix cannot be turned back into one.
- ``X-Forwarded-For`` is believed only when the direct peer is one of
  ``STREAMER_TRUSTED_PROXIES`` (CIDR list). The header is then read from the
  right, skipping trusted proxies; the first address that is not a trusted
  proxy is the client. A client cannot pick its own id by sending the header
  itself: its own entries sit left of what the trusted proxy appended.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_DOMAIN = b"pulsestream-client-id:"


def key_id(key: str) -> str:
    """A stable, non-reversible id for an API key, safe to log."""
    return "key-" + hashlib.sha256(_DOMAIN + key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """Parse a comma-separated CIDR list (or a list of CIDRs); a bare address is a /32 or /128, ``*`` is any.

    Raises ``ValueError`` naming the entry that is not a network.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    networks = []
    for item in items:
        entry = item.strip()
        if not entry:
            continue
        if entry == "*":  # any peer: for a Service only the proxy (e.g. the ingress controller) can reach
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8, ::1)") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    candidate = text.strip()
    if candidate.startswith("[") and "]" in candidate:  # [v6]:port
        candidate = candidate[1 : candidate.index("]")]
    elif candidate.count(":") == 1:  # v4:port
        candidate = candidate.partition(":")[0]
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


class ClientIdentifier:
    """Maps a request's key, peer address and ``X-Forwarded-For`` to a client id."""

    def __init__(self, trusted_proxies: Iterable[Network] = ()) -> None:
        self.trusted_proxies = tuple(trusted_proxies)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted_proxies)

    def client_address(self, peer: str | None, forwarded_for: str | None = None) -> str:
        """The client's address: ``peer``, or what trusted proxies say in ``X-Forwarded-For``."""
        if not peer:
            return "unknown"
        current = _address(peer)
        if current is None or not forwarded_for or not self._trusted(current):
            return str(current) if current is not None else peer
        for hop in reversed(forwarded_for.split(",")):
            address = _address(hop)
            if address is None:
                break  # garbage from upstream: the last proxy we trust is the best we know
            current = address
            if not self._trusted(address):
                break
        return str(current)

    def identify(self, key: str | None, peer: str | None, forwarded_for: str | None = None) -> str:
        """The client id: the id of ``key`` (pass only an accepted key), else ``addr-`` and the client's address."""
        if key:
            return key_id(key)
        return "addr-" + self.client_address(peer, forwarded_for)
