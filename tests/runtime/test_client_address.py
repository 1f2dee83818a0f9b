"""Whom a request is counted against (rate limits, open seat streams): its peer, or behind a trusted load
balancer the address the balancer appended to X-Forwarded-For -- never one the client wrote itself."""

import ipaddress

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from deploy.runtime.config import _networks
from deploy.runtime.http import TRUSTED_PROXIES, client_address


def request(peer: str, forwarded: list[str], trusted: str = "") -> web.Request:
    app = web.Application()
    app[TRUSTED_PROXIES] = _networks(trusted)
    headers = [("X-Forwarded-For", value) for value in forwarded]
    req = make_mocked_request("GET", "/", headers=headers, app=app)
    # make_mocked_request's transport has no peer: give it one
    req._transport_peername = (peer, 40000)
    return req.clone(remote=peer)


def test_without_trusted_proxies_the_peer_counts_and_forwarded_headers_are_ignored():
    assert client_address(request("203.0.113.9", ["198.51.100.7"])) == "203.0.113.9"


def test_a_trusted_proxy_is_counted_by_the_last_address_it_appended_not_the_clients_own_claims():
    trusted = "127.0.0.1/32"
    assert client_address(request("127.0.0.1", ["198.51.100.7"], trusted)) == "198.51.100.7"
    # A client claiming to be someone else: HAProxy appends the real address after the claim.
    assert client_address(request("127.0.0.1", ["10.0.0.1, 198.51.100.7"], trusted)) == "198.51.100.7"
    assert client_address(request("127.0.0.1", ["10.0.0.1", "198.51.100.7"], trusted)) == "198.51.100.7"
    # No or garbled header from the proxy: the proxy's own address (one bucket), never a made-up one.
    assert client_address(request("127.0.0.1", [], trusted)) == "127.0.0.1"
    assert client_address(request("127.0.0.1", ["not-an-address"], trusted)) == "127.0.0.1"


def test_a_peer_outside_the_trusted_networks_cannot_choose_its_address():
    assert client_address(request("203.0.113.9", ["198.51.100.7"], "127.0.0.1/32")) == "203.0.113.9"


def test_networks_parse_addresses_and_cidrs():
    assert _networks("127.0.0.1, 10.0.0.0/8") == (ipaddress.ip_network("127.0.0.1/32"),
                                                   ipaddress.ip_network("10.0.0.0/8"))
    assert _networks("") == ()
