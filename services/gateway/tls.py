"""TLS for the MLLP listener; in mutual TLS the client certificate's subject CN is the lab id."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any


def server_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def common_name(peer_certificate: dict[str, Any] | None) -> str | None:
    """The subject commonName of a verified client certificate, if any."""
    if not peer_certificate:
        return None
    for rdn in peer_certificate.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def lab_of(ssl_object: ssl.SSLObject, by_fingerprint: Callable[[str], str | None]) -> str | None:
    """The lab a verified client certificate identifies: the one registered with that certificate's
    SHA-256 fingerprint, else the lab its subject CN names."""
    der = ssl_object.getpeercert(binary_form=True)
    if der is None:
        return None
    return by_fingerprint(hashlib.sha256(der).hexdigest()) or common_name(ssl_object.getpeercert())
