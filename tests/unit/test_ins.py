from __future__ import annotations

import pytest

from services.gateway.ins import ins_error, ins_key, is_valid_ins


def test_spec_example_validates() -> None:
    assert ins_error("279035121518989") is None
    assert is_valid_ins("2 79 03 51 215 189 89")


def test_corsica_birth_place() -> None:
    body = "18503" + "2A004" + "123"
    key = 97 - int(body.replace("2A", "19")) % 97
    assert ins_key(body) == key
    assert is_valid_ins(f"{body}{key:02d}")
    body_b = "18503" + "2B033" + "456"
    assert is_valid_ins(f"{body_b}{97 - int('18503' + '18033' + '456') % 97:02d}")


def test_wrong_key_text_has_no_matricule() -> None:
    text = ins_error("279035121518942")
    assert text == "PID-3: INS key 42 does not match matricule (expected 89)"
    assert "2790351215189" not in text


@pytest.mark.parametrize(
    ("matricule", "fragment"),
    [
        ("27903512151898", "15 characters"),
        ("2790351215189X9", "digits"),
        ("2790351C1518989", "digits"),
        ("579035121518989", "sex digit 5"),
    ],
)
def test_malformed(matricule: str, fragment: str) -> None:
    error = ins_error(matricule)
    assert error is not None and fragment in error


@pytest.mark.parametrize("sex", "3478")
def test_nia_and_temporary_sex_digits(sex: str) -> None:
    body = sex + "790351215189"
    assert is_valid_ins(f"{body}{ins_key(body):02d}")
