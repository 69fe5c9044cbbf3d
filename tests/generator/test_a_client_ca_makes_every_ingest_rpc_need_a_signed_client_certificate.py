"""GENERATOR_TLS_CLIENT_CA_FILE: every RPC needs a client certificate the CA signed (mutual TLS)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from generator_streams import StartGenerator

from pulsestream.v1 import ingest_pb2, ingest_pb2_grpc, timeseries_pb2, timeseries_pb2_grpc


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def _signed(directory: Path, name: str, ca: str, usage: str) -> None:
    (directory / f"{name}.ext").write_text(
        f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA signing the generator's and a producer's certificates, and another CA signing an intruder's."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is needed for the TLS tests and must be installed in CI")
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("mtls")
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _signed(directory, "server", "ca", "serverAuth")
    _signed(directory, "producer", "ca", "clientAuth")
    _signed(directory, "intruder", "other-ca", "clientAuth")
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
