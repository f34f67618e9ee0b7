"""Identity sealed for the tracing service only (SPEC §8): public-key authenticated encryption
(libsodium crypto_box: X25519 + XSalsa20-Poly1305, through PyNaCl) to the tracing service's key.

A libsodium sealed box draws a fresh ephemeral key pair per message: ~50 µs, half the gateway's
per-message cost. `Sealer` instead keeps one ephemeral sender key for a short window (default
60 s or 10,000 seals), with a random nonce per message, and forgets it after that. Only the tracing
private key opens a blob; the window's ephemeral private key, were the gateway's memory read,
would open the identities sealed in that window only — identities that gateway memory held in
clear during that same window anyway.

Blob: base64 of `ephemeral public key (32) ‖ nonce (24) ‖ ciphertext`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, cast

from nacl.public import Box, PrivateKey, PublicKey
from nacl.utils import random as random_bytes

_KEY = 32
_NONCE = Box.NONCE_SIZE


class Sealer:
    def __init__(self, recipient_public_key: bytes, max_seals: int = 10_000, max_age_s: float = 60.0) -> None:
        self._recipient = PublicKey(recipient_public_key)
        self._max_seals, self._max_age_s = max_seals, max_age_s
        self._lock = threading.Lock()
        self._rotate()

    def _rotate(self) -> None:
        ephemeral = PrivateKey.generate()
        self._box = Box(ephemeral, self._recipient)  # the shared key is computed once, here
        self._ephemeral_public = bytes(ephemeral.public_key)
        self._seals, self._born = 0, time.monotonic()

    def seal(self, payload: dict[str, Any]) -> str:
        """Base64 blob holding `payload` as JSON (dates as ISO strings)."""
        plain = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
        with self._lock:
            if self._seals >= self._max_seals or time.monotonic() - self._born > self._max_age_s:
                self._rotate()
            self._seals += 1
            box, sender = self._box, self._ephemeral_public
        nonce = random_bytes(_NONCE)
        ciphertext = box.encrypt(plain, nonce).ciphertext
        return base64.b64encode(sender + nonce + ciphertext).decode("ascii")


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
