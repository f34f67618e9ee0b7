from __future__ import annotations

import base64
from datetime import date

import pytest
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey

from services.core.sealing import Sealer, open_sealed, seal
from services.gateway.identity import IdentityProtector, first_of_given_names, normalize_trait

KEY = PrivateKey.generate()


@pytest.fixture
def protector() -> IdentityProtector:
    return IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(KEY.public_key))


def test_ins_pseudonym_is_keyed_and_normalized(protector: IdentityProtector) -> None:
    p = protector.pseudonym_from_ins("279035121518989")
    assert len(p) == 64 and "279035121518989" not in p
    assert protector.pseudonym_from_ins("2 79 03 51 215 189 89") == p
    other = IdentityProtector(b"another key of sixteen+ bytes", bytes(KEY.public_key))
    assert other.pseudonym_from_ins("279035121518989") != p


@pytest.mark.parametrize(
    ("name", "given"),
    [("LEFÈVRE", "Élodie"), ("Lefevre", "ELODIE"), ("le fèvre", "elodie"), ("LEFEVRE", "Élodie Marie")],
)
def test_same_person_spelled_differently(protector: IdentityProtector, name: str, given: str) -> None:
    reference = protector.pseudonym_from_traits("LEFEVRE", "ELODIE", date(1990, 5, 4), "F")
    assert protector.pseudonym_from_traits(name, given, date(1990, 5, 4), "f") == reference


def test_traits_discriminate(protector: IdentityProtector) -> None:
    base = protector.pseudonym_from_traits("MARTIN", "Jean", date(1990, 5, 4), "M")
    assert protector.pseudonym_from_traits("MARTIN", "Jean", date(1990, 5, 5), "M") != base
    assert protector.pseudonym_from_traits("MARTIN", "Jean", date(1990, 5, 4), "F") != base
    assert protector.pseudonym_from_traits("MARTINE", "Jean", date(1990, 5, 4), "M") != base
    assert protector.pseudonym_from_ins("279035121518989") != base


def test_given_names_and_normalization() -> None:
    assert first_of_given_names("Marie-Élodie") == "Marie-Élodie"
    assert first_of_given_names(" Marie Élodie ") == "Marie"
    assert first_of_given_names("Marie, Élodie") == "Marie"
    assert normalize_trait("Marie-Élodie") == "MARIEELODIE"
    assert normalize_trait("N'DIAYE") == normalize_trait("N’Diaye") == "NDIAYE"
    assert normalize_trait("Cœur de Lion") == "COEURDELION"


def test_seal_roundtrip(protector: IdentityProtector) -> None:
    identity = {"ins": "279035121518989", "birth_name": "LEFÈVRE", "birth_date": date(1990, 5, 4)}
    sealed = protector.seal(identity)
    assert "LEF" not in sealed and sealed != protector.seal(identity)
    assert open_sealed(bytes(KEY), sealed) == {**identity, "birth_date": "1990-05-04"}
    with pytest.raises(CryptoError):
        open_sealed(bytes(PrivateKey.generate()), sealed)
    assert open_sealed(bytes(KEY), seal(bytes(KEY.public_key), {"a": 1})) == {"a": 1}


def test_bad_keys() -> None:
    with pytest.raises(ValueError):
        IdentityProtector(b"short", bytes(KEY.public_key))
    with pytest.raises(ValueError):
        IdentityProtector(b"0123456789abcdef", b"not a key")


def test_sealer_never_repeats_a_nonce_under_one_key() -> None:
    sealer = Sealer(bytes(KEY.public_key), max_seals=3)
    blobs = [base64.b64decode(sealer.seal({"n": n})) for n in range(7)]
    senders = [blob[:32] for blob in blobs]
    nonces = [blob[32:56] for blob in blobs]
    # a window of three seals per ephemeral key, then a new key
    assert [senders.index(s) for s in senders] == [0, 0, 0, 3, 3, 3, 6]
    assert len(set(nonces)) == len(blobs)
    opened = [open_sealed(bytes(KEY), base64.b64encode(blob).decode()) for blob in blobs]
    assert opened == [{"n": n} for n in range(7)]
