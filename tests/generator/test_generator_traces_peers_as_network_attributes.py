"""The generator's tracing: a gRPC peer string becomes the span's network attributes."""

from __future__ import annotations

import pytest
from pulsestream_generator.tracing import peer_attributes


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (
            "ipv4:127.0.0.1:5432",
            {"network.peer.address": "127.0.0.1", "network.peer.port": 5432, "network.type": "ipv4"},
        ),
        ("ipv6:[::1]:80", {"network.peer.address": "::1", "network.peer.port": 80, "network.type": "ipv6"}),
        ("unix:/tmp/s.sock", {"network.peer.address": "/tmp/s.sock", "network.transport": "unix"}),
        ("", {}),
    ],
)
def test_grpc_peer_strings_become_network_attributes(peer: str, expected: dict[str, object]) -> None:
    assert peer_attributes(peer) == expected
