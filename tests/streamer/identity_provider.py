"""A stand-in identity provider for the token tests: signing keys made with ``cryptography``, a JWKS served over
real TLS on loopback (a CA and a server certificate for 127.0.0.1 made here too), and a switch to make it fail.

The provider is not a mock of the streamer's code: it is an https server any JWKS client could read, signing
tokens with PyJWT as a provider's library would.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://idp.test/realms/ops"
AUDIENCE = "pulsestream-e2e"


class SigningKey:
    """One provider key: RS256 (RSA 2048) or ES256 (P-256), its public JWK, and tokens it signs."""

    def __init__(self, kid: str, kind: str) -> None:
        self.kid = kid
        self.algorithm = "RS256" if kind == "rsa" else "ES256"
        self.private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        codec = jwt.algorithms.RSAAlgorithm if kind == "rsa" else jwt.algorithms.ECAlgorithm
        self.jwk: dict[str, Any] = {
            **json.loads(codec.to_jwk(self.private.public_key())),  # type: ignore[arg-type]
            "kid": kid,
            "use": "sig",
            "alg": self.algorithm,
        }

    def token(self, ttl: float = 300, **claims: Any) -> str:
        now = int(datetime.datetime.now(datetime.UTC).timestamp())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-dashboard", "iat": now, "exp": now + int(ttl), **claims}
        return jwt.encode(body, self.private, algorithm=self.algorithm, headers={"kid": self.kid})


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("pulsestream test CA"))
        .issuer_name(_name("pulsestream test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class Provider:
    """An https JWKS endpoint on 127.0.0.1: serves ``keys`` at ``/jwks``; ``failing`` makes it answer 503."""

    def __init__(self, directory: Path) -> None:
        self.ca, cert, key = make_tls(directory)
        self.keys: list[SigningKey] = []
        self.failing = False
        self.requests = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests += 1
                if provider.failing or self.path != "/jwks":
                    self.send_response(503 if provider.failing else 404)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [k.jwk for k in provider.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="jwks", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/jwks"

    def start(self) -> Provider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
