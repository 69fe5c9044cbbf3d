"""GENERATOR_TLS_CLIENT_CA_FILE: every RPC needs a client certificate the CA signed (mutual TLS)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from certificates import authority, require_openssl, signed
from generator_streams import StartGenerator

from pulsestream.v1 import ingest_pb2, ingest_pb2_grpc, timeseries_pb2, timeseries_pb2_grpc


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA signing the generator's and a producer's certificates, and another CA signing an intruder's."""
    require_openssl()
    directory = tmp_path_factory.mktemp("mtls")
    authority(directory, "ca")
    authority(directory, "other-ca")
    signed(directory, "server", "ca", "serverAuth")
    signed(directory, "producer", "ca", "clientAuth")
    signed(directory, "intruder", "other-ca", "clientAuth")
    return directory


def _credentials(pki: Path, client: str | None) -> grpc.ChannelCredentials:
    ca = (pki / "ca.crt").read_bytes()
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=(pki / f"{client}.key").read_bytes(),
        certificate_chain=(pki / f"{client}.crt").read_bytes(),
    )


async def _calls(address: str, credentials: grpc.ChannelCredentials) -> tuple[grpc.StatusCode, grpc.StatusCode]:
    """The status of a ListSeries and of a Publish over one channel."""
    codes = []
    async with grpc.aio.secure_channel(address, credentials) as channel:
        for call in (
            timeseries_pb2_grpc.TimeSeriesServiceStub(channel).ListSeries(
                timeseries_pb2.ListSeriesRequest(), timeout=5
            ),
            ingest_pb2_grpc.IngestServiceStub(channel).Publish(
                ingest_pb2.PublishRequest(points=[ingest_pb2.PublishPoint(series="orders", value=1.0)]), timeout=5
            ),
        ):
            try:
                await call
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
    return codes[0], codes[1]


async def test_with_a_client_ca_only_clients_with_its_certificates_get_any_rpc(
    start_generator: StartGenerator, pki: Path
) -> None:
    app = await start_generator(
        tls_cert_file=str(pki / "server.crt"),
        tls_key_file=str(pki / "server.key"),
        tls_client_ca_file=str(pki / "ca.crt"),
    )
    address = f"localhost:{app.port}"
    assert await _calls(address, _credentials(pki, "producer")) == (grpc.StatusCode.OK, grpc.StatusCode.OK)
    for client in (None, "intruder"):
        listed, published = await _calls(address, _credentials(pki, client))
        assert listed == published == grpc.StatusCode.UNAVAILABLE, client  # the handshake fails: no RPC at all


def test_a_client_ca_needs_the_servers_own_certificate() -> None:
    from pulsestream_generator.settings import GeneratorSettings

    from pulsestream.envsettings import SettingsError

    with pytest.raises(SettingsError, match="GENERATOR_TLS_CLIENT_CA_FILE"):
        GeneratorSettings.from_env({"GENERATOR_TLS_CLIENT_CA_FILE": "/tls/ca.crt"})
