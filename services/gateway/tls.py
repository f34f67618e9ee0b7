"""TLS for the MLLP listener; in mutual TLS the client certificate's subject CN is the lab id."""

from __future__ import annotations

import ssl
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


def lab_of(peer_certificate: dict[str, Any] | None) -> str | None:
    """The lab a verified client certificate names (subject commonName), if any."""
    if not peer_certificate:
        return None
    for rdn in peer_certificate.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None
