"""TLS between streamer and generator: the right CA connects and points flow; a wrong CA is an upstream error
that /health reports (plaintext stays the default everywhere else)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from certificates import authority, require_openssl, signed
from loopback import wait_for
from services import Generator, Stack
from sse import iter_events

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signs the generator's certificate (for 127.0.0.1 and localhost), and an unrelated CA."""
    require_openssl()
    directory = tmp_path_factory.mktemp("pki")
    authority(directory, "right-ca")
    authority(directory, "wrong-ca")
    signed(directory, "server", "right-ca", "serverAuth", common_name="localhost")
    return directory


@pytest.fixture(scope="module")
def generator(module_stack: Stack, pki: Path) -> Generator:
    return module_stack.generator(
        {"frequency": "50ms"},
        tls_ca=pki / "right-ca.crt",
        GENERATOR_TLS_CERT_FILE=str(pki / "server.crt"),
        GENERATOR_TLS_KEY_FILE=str(pki / "server.key"),
    )


def test_a_streamer_with_the_right_ca_connects_and_points_flow(
    module_stack: Stack, generator: Generator, pki: Path
) -> None:
    streamer = module_stack.streamer(generator, STREAMER_TLS_CA_FILE=str(pki / "right-ca.crt"))
    with (
        httpx.Client(timeout=10.0) as client,
        client.stream("GET", streamer.url + "/v1/stream", params={"series": "cpu"}) as response,
    ):
        assert response.status_code == 200
        for event in iter_events(response):
            assert event.event != "notice", event.data
            if event.event == "points" and event.data["points"]:
                break
    assert streamer.health()["status"] == "ok"


def test_a_streamer_with_a_wrong_ca_reports_the_upstream_error_in_health(
    module_stack: Stack, generator: Generator, pki: Path
) -> None:
    streamer = module_stack.streamer(
        generator, STREAMER_TLS_CA_FILE=str(pki / "wrong-ca.crt"), STREAMER_CONNECT_TIMEOUT="1s"
    )
    # Ask for data so the streamer dials the generator.
    httpx.get(streamer.url + "/v1/series", timeout=15.0)

    def reported() -> dict[str, object] | None:
        body = streamer.health()
        return body if body["upstream"] != "ready" and body["upstream_detail"]["error"] else None

    body = wait_for(reported, timeout=30, what="the upstream error in /health")
    assert body["status"] != "ok", json.dumps(body)
    assert (
        "CERTIFICATE_VERIFY_FAILED" in body["upstream_detail"]["error"]
        or "handshake" in body["upstream_detail"]["error"].lower()
    )
