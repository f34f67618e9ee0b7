"""Sealed boxes (SPEC §8): identity sealed with the tracing service's public key, opened only by it."""

from __future__ import annotations

import base64
import functools
import json
from typing import Any, cast

from nacl.public import PrivateKey, PublicKey, SealedBox


@functools.lru_cache(maxsize=8)
def _sealing_box(public_key: bytes) -> SealedBox[PublicKey]:
    return SealedBox(PublicKey(public_key))


def seal(public_key: bytes, payload: dict[str, Any]) -> str:
    """Base64 of a libsodium sealed box holding `payload` as JSON (dates as ISO strings)."""
    plain = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    return base64.b64encode(_sealing_box(public_key).encrypt(plain)).decode("ascii")


def open_sealed(private_key: bytes, sealed: str) -> dict[str, Any]:
    """The payload sealed by `seal` (raises nacl.exceptions.CryptoError if not sealed for this key)."""
    plain = SealedBox(PrivateKey(private_key)).decrypt(base64.b64decode(sealed))
    return cast(dict[str, Any], json.loads(plain))
