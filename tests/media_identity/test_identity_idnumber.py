"""R-12: GB 11643 ID numbers: check digit, embedded birth date and sex, age, region code."""

from datetime import date

import pytest

from rules import idnumber


@pytest.mark.parametrize(
    "number", ["11010519491231002X", "11010519491231002x", "440524188001010014"]
)
def test_r12_check_digit_accepts_the_standards_examples(number: str) -> None:
    assert idnumber.has_valid_format(number)
    assert idnumber.has_valid_check_digit(number)


def test_r12_any_single_digit_change_breaks_the_check_digit() -> None:
    good = "11010519491231002X"
    for i in range(17):
        digit = str((int(good[i]) + 1) % 10)
        assert not idnumber.has_valid_check_digit(good[:i] + digit + good[i + 1 :])
    assert not idnumber.has_valid_check_digit("110105194912310021")
    assert not idnumber.has_valid_check_digit("1101051949123100")


def test_r12_birth_date_sex_and_age_come_from_the_number() -> None:
    facts = idnumber.IdNumberFacts.of("11010519491231002x")
    assert facts.number == "11010519491231002X"
    assert facts.birth_date == date(1949, 12, 31)
    assert facts.sex == "女"
    assert idnumber.age_on(date(1949, 12, 31), date(2026, 12, 30)) == 76
    assert idnumber.age_on(date(1949, 12, 31), date(2026, 12, 31)) == 77
    assert idnumber.birth_date_of("110105194902301234") is None  # 30 February


def test_r12_region_code_format() -> None:
    assert idnumber.has_valid_region_code("330203198807151234")
    assert not idnumber.has_valid_region_code("990203198807151234")  # no province 99
    assert not idnumber.has_valid_region_code("330000198807151234")


def test_make_id_number_builds_valid_and_invalid_numbers() -> None:
    ok = idnumber.make_id_number("330203", date(1988, 7, 15), 123)
    bad = idnumber.make_id_number("330203", date(1988, 7, 15), 123, valid=False)
    assert idnumber.has_valid_check_digit(ok)
    assert not idnumber.has_valid_check_digit(bad)
    assert ok[:17] == bad[:17]
