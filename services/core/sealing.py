"""Identity sealed for the tracing service only (SPEC §8): public-key authenticated encryption
(libsodium crypto_box: X25519 + XSalsa20-Poly1305, through PyNaCl) to the tracing service's key.

A libsodium sealed box draws a fresh ephemeral key pair per message: ~50 µs, half the gateway's
per-message cost. `Sealer` instead keeps one ephemeral sender key for a short window (default
60 s or 10,000 seals), and forgets it after that. Only the tracing private key opens a blob; the
window's ephemeral private key, were the gateway's memory read, would open the identities sealed in
that window only — identities that gateway memory held in clear during that same window anyway.

Nonces: a crypto_box nonce must never repeat under one key pair. Each window draws a random 16-byte
prefix with its key and numbers its seals (8 bytes, big-endian), so no nonce repeats within a window,
and a new window has a new key: no random draw per message (a system call on the hot path).

Blob: base64 of `ephemeral public key (32) ‖ nonce (24) ‖ ciphertext`; the plaintext is compact JSON
(pydantic-core's serializer: dates and datetimes as ISO 8601 strings).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from typing import Any, cast

from nacl.bindings import crypto_box_afternm
from nacl.public import Box, PrivateKey, PublicKey
from nacl.utils import random as random_bytes
from pydantic_core import to_json

_KEY = 32
_NONCE = Box.NONCE_SIZE
_NONCE_PREFIX = _NONCE - 8


class Sealer:
    def __init__(self, recipient_public_key: bytes, max_seals: int = 10_000, max_age_s: float = 60.0) -> None:
        self._recipient = PublicKey(recipient_public_key)
        self._max_seals, self._max_age_s = max_seals, max_age_s
        self._lock = threading.Lock()
        self._rotate()

    def _rotate(self) -> None:
        ephemeral = PrivateKey.generate()
        # the shared key is computed once, here
        self._shared_key = Box(ephemeral, self._recipient).shared_key()
        self._header = bytes(ephemeral.public_key) + random_bytes(_NONCE_PREFIX)
        """Sender public key and the window's nonce prefix: the first 48 bytes of every blob."""
        self._seals, self._born = 0, time.monotonic()

    def seal(self, payload: dict[str, Any]) -> str:
        """Base64 blob holding `payload` as JSON (dates as ISO strings)."""
        plain = to_json(payload)
        with self._lock:
            if self._seals >= self._max_seals or time.monotonic() - self._born > self._max_age_s:
                self._rotate()
            self._seals += 1
            key, header, number = self._shared_key, self._header, self._seals
        counter = number.to_bytes(8, "big")
        ciphertext = crypto_box_afternm(plain, header[_KEY:] + counter, key)
        return binascii.b2a_base64(header + counter + ciphertext, newline=False).decode("ascii")


def seal(public_key: bytes, payload: dict[str, Any]) -> str:
    """One-off sealing with a key used for this message only."""
    return Sealer(public_key, max_seals=1).seal(payload)


def open_sealed(private_key: bytes, sealed: str) -> dict[str, Any]:
    """The payload of a blob made by `Sealer` or `seal` (raises nacl.exceptions.CryptoError if it was
    not sealed for this key, or was altered)."""
    blob = base64.b64decode(sealed)
    sender, nonce, ciphertext = blob[:_KEY], blob[_KEY : _KEY + _NONCE], blob[_KEY + _NONCE :]
    plain = Box(PrivateKey(private_key), PublicKey(sender)).decrypt(ciphertext, nonce)
    return cast(dict[str, Any], json.loads(plain))
