"""The client's address behind reverse proxies (``server.trusted_proxies``).

Behind nginx or a load balancer every connection comes from the proxy, so the peer address
says nothing about the visitor: rate limits per address would throttle every visitor at once,
the IP-to-region table would see one address, and a dialplan allowance for loopback would let
the whole internet in through a local proxy. With ``server.trusted_proxies`` set, a request
whose peer is one of those networks has its address taken from ``X-Forwarded-For``, read right
to left, skipping the trusted hops: the first address that is not a trusted proxy is the
client (what nginx's ``real_ip_recursive`` does). A request from any other peer keeps its peer
address and its ``X-Forwarded-*`` headers are ignored, so a client cannot claim an address by
sending the header itself.

aiohttp-remotes was considered: its ``XForwardedFiltered`` believes the header whoever the peer
is (a direct client could pose as loopback), and ``XForwardedStrict`` refuses requests that do
not come through the proxy (a PBX asking the dialplan endpoint directly).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypedDict

from aiohttp import hdrs, web

from crm_core.errors import DomainError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The forwarded client, on the original request (the one aiohttp's access log is given).
CLIENT_ADDRESS = web.RequestKey("client_address", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadForwardedFor(DomainError):
    error_id = "bad-forwarded-for"


def networks(items: Iterable[str]) -> tuple[Network, ...]:
    """``items`` (addresses or CIDR networks) as networks; ValueError naming a bad one."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"expected an IP address or network, got {item!r}") from exc
    return tuple(out)


def address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address (an IPv4-mapped IPv6 one as IPv4: a dual-stack listener sees
    IPv4 peers as ::ffff:a.b.c.d, and they must match IPv4 networks); None if it is none."""
    try:
        parsed = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return getattr(parsed, "ipv4_mapped", None) or parsed


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """The client's address: ``peer`` unless it is a trusted proxy, else the right-most
    ``X-Forwarded-For`` entry that is not one (the left-most when every hop is trusted).

    ``forwarded_for`` holds the header's values (several headers are one list, in order).
    Raises :class:`BadForwardedFor` for an entry a trusted hop vouches for that is not an IP
    address."""
    peer_address = address(peer or "")
    if peer_address is None or not any(peer_address in net for net in trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        hop_address = address(hop)
        if hop_address is None:
            raise BadForwardedFor(
                f"X-Forwarded-For: {hop.strip()!r} is not an IP address",
                details={"header": "X-Forwarded-For", "value": hop.strip()},
            )
        client = str(hop_address)
        if not any(hop_address in net for net in trusted):
            break
    return client


_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def forwarded_scheme_and_host(
    peer: str | None, headers: Any, trusted: Sequence[Network]
) -> tuple[str | None, str | None]:
    """(scheme, host) the client used, as a trusted proxy forwarded them (``X-Forwarded-Proto``,
    ``X-Forwarded-Host``; the first value of a list: the hop that faced the client); (None,
    None) for a peer that is not a trusted proxy or headers that are not a scheme and a host."""
    peer_address = address(peer or "")
    if peer_address is None or not any(peer_address in net for net in trusted):
        return None, None
    proto = headers.get(hdrs.X_FORWARDED_PROTO, "").split(",")[0].strip().lower()
    host = headers.get(hdrs.X_FORWARDED_HOST, "").split(",")[0].strip()
    return (
        proto if proto in ("http", "https") else None,
        host if host and _HOST.match(host) else None,
    )


class _Changes(TypedDict, total=False):
    """What a request from a trusted proxy is cloned with."""

    remote: str
    scheme: str
    host: str


def middleware(trusted: Sequence[Network]) -> Any:
    """An aiohttp middleware giving handlers the client's address as ``request.remote`` (and
    the scheme and host he used as ``request.scheme``/``request.host``)."""

    @web.middleware
    async def real_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        changes: _Changes = {}
        forwarded = request.headers.getall(hdrs.X_FORWARDED_FOR, [])
        if forwarded:
            remote = client_address(request.remote, forwarded, trusted)
            if remote != request.remote:
                if remote:
                    request[CLIENT_ADDRESS] = remote
                changes["remote"] = remote or ""
        scheme, host = forwarded_scheme_and_host(request.remote, request.headers, trusted)
        if scheme and scheme != request.scheme:
            changes["scheme"] = scheme
        if host and host != request.host:
            changes["host"] = host
        if not changes:
            return await handler(request)
        clone = request.clone(**changes)
        try:
            return await handler(clone)
        finally:
            # The response is prepared with the original request: what handlers noted on the
            # clone (CORS decisions, the user) must be there for the response-prepare hooks.
            for key, value in clone.items():
                request[key] = value

    return real_client
