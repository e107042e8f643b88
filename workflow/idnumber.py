"""Resident ID numbers (GB 11643-1999): check digit, birth date and age (R-12)."""

from __future__ import annotations

import re
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_FORMAT = re.compile(r"^[1-9][0-9]{5}(18|19|20)[0-9]{2}[0-9]{4}[0-9]{3}[0-9X]$")


def check_digit(first17: str) -> str:
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def birth_date(number: str) -> date:
    return date(int(number[6:10]), int(number[10:12]), int(number[12:14]))


def is_valid(number: str) -> bool:
    number = number.upper()
    if not _FORMAT.match(number):
        return False
    try:
        born = birth_date(number)
    except ValueError:
        return False
    return born <= date.today() and check_digit(number[:17]) == number[17]


def age_on(number: str, day: date) -> int:
    born = birth_date(number)
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))
