"""MLLP over TLS and mutual TLS: the client certificate names the lab; it may only send as itself."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, port_open, wait_until
from services.core.config import Settings
from services.core.db.engine import make_engine
from services.gateway.labs import LabDirectory
from services.simulator.oru import Observation, Order, build_oru_r01, random_patient
from tests.support import mllp_send

pytestmark = pytest.mark.e2e


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_gateway(fresh_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    ca_cert, ca_key = _issue("LabFlow test CA", None, ca=True)
    ca_path, _ = _write(tmp_path / "ca", ca_cert, ca_key)
    server_cert, server_key = _issue("gateway", (ca_cert.subject, ca_key), server=True)
    cert_path, key_path = _write(tmp_path / "server", server_cert, server_key)
    lab_cert, lab_key = _issue("LAB-TLS", (ca_cert.subject, ca_key))
    _write(tmp_path / "lab", lab_cert, lab_key)
    # a LIS whose certificate names its host, registered for its lab by the certificate's fingerprint
    host_cert, host_key = _issue("lis-host-42.example", (ca_cert.subject, ca_key))
    _write(tmp_path / "host", host_cert, host_key)
    settings = fresh_settings.model_copy(
        update={
            "mllp_port": free_port(),
            "gateway_ops_port": free_port(),
            "mllp_tls_cert": cert_path,
            "mllp_tls_key": key_path,
            "mllp_tls_client_ca": ca_path,
        }
    )
    engine = make_engine(settings.require_database())
    directory = LabDirectory(engine)
    directory.add("LAB-TLS", "Laboratoire TLS", None, None)
    directory.add("OTHER-LAB", "Autre laboratoire", None, None)
    fingerprint = host_cert.fingerprint(hashes.SHA256()).hex()
    directory.add("LAB-FP", "Laboratoire par empreinte", None, fingerprint)
    engine.dispose()
    gateway = ServiceProcess("gateway", settings_env(settings), tmp_path)
    try:
        wait_until(lambda: port_open(settings.mllp_port), timeout_s=30, what="the TLS gateway")
        yield settings, tmp_path
    finally:
        gateway.stop()


def client_context(tmp_path: Path, with_certificate: bool, name: str = "lab") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tmp_path / "ca.crt")
    if with_certificate:
        context.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
    return context


def message(lab: str, control_id: str) -> bytes:
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        f"TLS-{control_id}",
        "258500001",
        result_time - timedelta(hours=3),
        [Observation("94500-6", "NEGATIF", "F", result_time)],
    )
    return build_oru_r01(lab, control_id, [(random_patient(random.Random(control_id)), [order])])


def test_lab_with_its_certificate_is_accepted_as_itself_only(tls_gateway: tuple[Settings, Path]) -> None:
    settings, certs = tls_gateway
    context = client_context(certs, with_certificate=True)

    accepted = mllp_send(settings.mllp_port, message("LAB-TLS", "TLS1"), ssl_context=context)[0]
    impersonating = mllp_send(settings.mllp_port, message("OTHER-LAB", "TLS2"), ssl_context=context)[0]

    assert (accepted.code, accepted.control_id) == ("AA", "TLS1")
    assert (impersonating.code, impersonating.control_id) == ("AR", "TLS2")
    assert "MSH^1^4" in impersonating.errors[0]


def test_connection_without_a_client_certificate_is_refused(tls_gateway: tuple[Settings, Path]) -> None:
    settings, certs = tls_gateway
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        mllp_send(
            settings.mllp_port,
            message("LAB-TLS", "TLS3"),
            ssl_context=client_context(certs, with_certificate=False),
        )[0]


def test_certificate_registered_by_fingerprint_identifies_its_lab(tls_gateway: tuple[Settings, Path]) -> None:
    settings, certs = tls_gateway
    context = client_context(certs, with_certificate=True, name="host")

    accepted = mllp_send(settings.mllp_port, message("LAB-FP", "TLS4"), ssl_context=context)[0]
    impersonating = mllp_send(settings.mllp_port, message("LAB-TLS", "TLS5"), ssl_context=context)[0]

    assert (accepted.code, accepted.control_id) == ("AA", "TLS4")
    assert (impersonating.code, impersonating.control_id) == ("AR", "TLS5")
