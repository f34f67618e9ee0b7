"""Lab HTTP tokens: `<lab id>.<secret>`; only a salted scrypt hash of the whole token is stored.

Shared by the gateway (HTTP intake) and the dashboard (lab portal): both verify a lab's token against
`labs.token_hash` the same way, so a token that sends a lab's results also opens its portal page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def new_token(lab_id: str) -> str:
    return f"{lab_id}.{secrets.token_urlsafe(32)}"


def token_lab_id(token: str) -> str | None:
    lab_id, dot, secret = token.rpartition(".")
    return lab_id if dot and lab_id and secret else None


def hash_token(token: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    encoded = (base64.b64encode(part).decode() for part in (salt, digest))
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${'$'.join(encoded)}"


def verify_token(token: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            token.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def token_fingerprint(token: str) -> str:
    """What a verified token is remembered by in memory (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()
