"""Patient pseudonyms and sealed identity (SPEC §8).

`patient_pseudonym` = HMAC-SHA-256 (keyed, hex) of a domain-prefixed, normalized identifier:
- `ins`: the INS matricule, uppercase, spaces removed;
- `traits`: birth name, first given name, birth date (ISO) and sex, each normalized as below.

Traits normalization: Œ/Æ/ß expanded, NFKD with combining marks dropped (accents), uppercase, and
everything that is not a letter or digit dropped (spaces, hyphens, apostrophes, punctuation), so that
`Lefèvre`, `LEFEVRE` and `le fèvre` agree. The first given name is the given-name text up to the first
space or comma: a hyphenated given name is one name (`Marie-Élodie` → `MARIEELODIE`) while
`Marie Élodie` is two given names of which `MARIE` is the first — the French civil-status convention,
and the one the INS referential uses for its "premier prénom".
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import unicodedata
from datetime import date
from typing import Any

from services.core.sealing import Sealer
from services.gateway.ins import normalize_matricule

_LIGATURES = str.maketrans({"Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "ß": "ss"})
_INS_DOMAIN = b"labflow/ins/v1\x1f"
_TRAITS_DOMAIN = b"labflow/traits/v1\x1f"
_SEXES = {"F": "F", "M": "M"}


@functools.lru_cache(maxsize=65536)
def normalize_trait(text: str) -> str:
    """Uppercase, without accents, spaces or punctuation."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    return "".join(ch for ch in decomposed if ch.isalnum() and not unicodedata.combining(ch)).upper()


def first_of_given_names(given_names: str) -> str:
    """The first of the given names (space or comma separated); hyphenated names are one name."""
    return given_names.replace(",", " ").strip().split(" ", 1)[0]


class IdentityProtector:
    """Keyed pseudonyms and identity sealing; holds the gateway's secrets."""

    __slots__ = ("_key", "_sealer")

    def __init__(self, pseudonym_key: bytes, tracing_public_key: bytes) -> None:
        if len(pseudonym_key) < 16:
            raise ValueError("the pseudonym key must have at least 16 bytes")
        if len(tracing_public_key) != 32:
            raise ValueError("the tracing public key must be a 32-byte Curve25519 key")
        self._key = pseudonym_key
        self._sealer = Sealer(tracing_public_key)

    def _hmac(self, material: bytes) -> str:
        return hmac.new(self._key, material, hashlib.sha256).hexdigest()

    def pseudonym_from_ins(self, matricule: str) -> str:
        return self._hmac(_INS_DOMAIN + normalize_matricule(matricule).encode("ascii", "replace"))

    def pseudonym_from_traits(
        self, birth_name: str, first_given_name: str, birth_date: date, sex: str
    ) -> str:
        """Pseudonym from strict traits; only the first of `first_given_name` is used."""
        material = "\x1f".join(
            (
                normalize_trait(birth_name),
                normalize_trait(first_of_given_names(first_given_name)),
                birth_date.isoformat(),
                _SEXES.get(sex.strip().upper(), "U"),
            )
        )
        return self._hmac(_TRAITS_DOMAIN + material.encode("utf-8"))

    def seal(self, identity: dict[str, Any]) -> str:
        """The identity sealed for the tracing service (see services.core.sealing)."""
        return self._sealer.seal(identity)
