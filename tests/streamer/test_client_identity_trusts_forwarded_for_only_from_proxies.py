"""Client identity: an accepted key's opaque id, else the address, with X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulsestream_streamer.access.clientid import ClientIdentifier, key_id, parse_networks
from pulsestream_streamer.access.keys import KEY_PATTERN

PROXIES = parse_networks("10.0.0.0/8, 192.168.1.1, fd00::/8")


def test_a_key_id_is_stable_short_and_not_the_key() -> None:
    assert key_id("s3cret-key") == key_id("s3cret-key")
    assert key_id("s3cret-key") != key_id("s3cret-kez")
    assert key_id("s3cret-key").startswith("key-") and len(key_id("s3cret-key")) == 20


@given(st.from_regex(KEY_PATTERN, fullmatch=True))
def test_a_key_id_never_contains_the_key(key: str) -> None:
    assert key not in key_id(key)[4:] or len(key) <= 2


def test_a_bad_network_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        parse_networks("10.0.0.0/8,10.0.0.300")


def test_an_accepted_key_wins_over_the_address() -> None:
    ids = ClientIdentifier(PROXIES)
    assert ids.identify("k", "203.0.113.5:4711") == key_id("k")


def test_without_a_key_the_peer_address_is_the_client_and_the_port_is_ignored() -> None:
    ids = ClientIdentifier(PROXIES)
    assert ids.identify(None, "203.0.113.5:4711") == "addr-203.0.113.5"
    assert ids.identify(None, "[2001:db8::1]:4711") == "addr-2001:db8::1"
    assert ids.identify(None, "2001:db8::1") == "addr-2001:db8::1"
    assert ids.identify(None, None) == "addr-unknown"


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    ids = ClientIdentifier(PROXIES)
    assert ids.client_address("203.0.113.5", "1.2.3.4") == "203.0.113.5"


def test_forwarded_for_from_a_trusted_proxy_names_the_first_untrusted_hop_from_the_right() -> None:
    ids = ClientIdentifier(PROXIES)
    # spoofed, real client, inner proxy; the peer is the outer proxy
    assert ids.client_address("10.1.1.1", "6.6.6.6, 198.51.100.7, 10.2.2.2") == "198.51.100.7"
    assert ids.client_address("192.168.1.1", "198.51.100.7") == "198.51.100.7"
    assert ids.client_address("fd00::1", "2001:db8::9") == "2001:db8::9"


def test_garbage_in_forwarded_for_falls_back_to_the_last_trusted_hop() -> None:
    ids = ClientIdentifier(PROXIES)
    assert ids.client_address("10.1.1.1", "not-an-ip") == "10.1.1.1"
    assert ids.client_address("10.1.1.1", "198.51.100.7, junk, 10.3.3.3") == "10.3.3.3"


def test_without_trusted_proxies_forwarded_for_is_never_believed() -> None:
    ids = ClientIdentifier()
    assert ids.client_address("10.1.1.1", "198.51.100.7") == "10.1.1.1"


@given(st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=5))
def test_a_client_behind_a_trusted_proxy_cannot_choose_its_id(spoofed: list[str]) -> None:
    ids = ClientIdentifier(PROXIES)
    # Whatever the client put in the header, the proxy appends the real peer (203.0.113.9) to it.
    header = ", ".join([*spoofed, "203.0.113.9"])
    assert ids.client_address("10.0.0.1", header) == "203.0.113.9"


def test_a_star_trusts_every_peer_of_either_family() -> None:
    networks = parse_networks("*")
    assert any(ipaddress.ip_address("203.0.113.9") in n for n in networks)
    assert any(ipaddress.ip_address("2001:db8::1") in n for n in networks)
