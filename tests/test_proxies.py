"""The client's address behind trusted reverse proxies (contact_center.http.proxies)."""

from __future__ import annotations

import logging
import re

import pytest

from contact_center.http.proxies import BadForwardedFor, client_address, networks

TRUSTED = networks(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # The peer is no trusted proxy: its own address, whatever the header claims.
        ("198.51.100.7", ["127.0.0.1"], "198.51.100.7"),
        # nginx on this host: the address it saw.
        ("127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        # Two trusted hops; what the client wrote itself (left) is not believed.
        ("127.0.0.1", ["6.6.6.6, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),
        # Several headers are one list, in order.
        ("127.0.0.1", ["203.0.113.9", "10.1.2.3"], "203.0.113.9"),
        # Every hop trusted: the left-most (an internal client).
        ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
        # IPv6 proxy and client.
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
        # A dual-stack listener: the IPv4 proxy as an IPv4-mapped peer, a mapped client.
        ("::ffff:127.0.0.1", ["::ffff:203.0.113.9"], "203.0.113.9"),
        # A trusted peer with an empty header: the peer.
        ("127.0.0.1", [" "], "127.0.0.1"),
        # Garbage written by the client, left of the hop our proxy vouches for: never read.
        ("127.0.0.1", ["garbage, 203.0.113.9"], "203.0.113.9"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], client: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == client


def test_a_hop_that_is_no_address_is_named() -> None:
    with pytest.raises(BadForwardedFor, match="X-Forwarded-For: 'unknown' is not an IP address"):
        client_address("127.0.0.1", ["203.0.113.9, unknown"], TRUSTED)


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=re.escape("got '10.0.0.0/33'")):
        networks(["10.0.0.0/8", "10.0.0.0/33"])


def test_the_access_log_names_the_forwarded_client(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from contact_center.http.proxies import CLIENT_ADDRESS
    from contact_center.logs import AccessLogger

    logger = logging.getLogger("test.access")
    caplog.set_level(logging.INFO, logger="test.access")
    request = make_mocked_request("GET", "/api/v1/x")
    request[CLIENT_ADDRESS] = "203.0.113.9"
    AccessLogger(logger, "").log(request, web.Response(status=204), 0.001)
    plain = make_mocked_request("GET", "/api/v1/x")
    AccessLogger(logger, "").log(plain, web.Response(status=204), 0.001)
    remotes = [getattr(r, "remote", None) for r in caplog.records]
    assert remotes == ["203.0.113.9", plain.remote]


def test_an_ipv4_mapped_address_is_its_ipv4_address() -> None:
    """So that a dual-stack listener's IPv4 peers match IPv4 networks (trusted proxies,
    distribution.dial_allow_from)."""
    import ipaddress

    from contact_center.http.proxies import address

    assert address("::ffff:127.0.0.1") == ipaddress.IPv4Address("127.0.0.1")
    assert address(" 2001:db8::5 ") == ipaddress.IPv6Address("2001:db8::5")
    assert address("nonsense") is None
