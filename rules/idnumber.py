"""Chinese resident ID numbers (GB 11643-1999): check digit, birth date, sex, age (R-12)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_NUMBER_RE = re.compile(r"^\d{17}[\dX]$")

# Province-level codes of GB/T 2260 (first two digits of the address code), plus the codes used on
# residence permits of Hong Kong, Macao (81, 82) and Taiwan (83) residents, which share the format.
PROVINCE_CODES: frozenset[str] = frozenset(
    (  # noqa: SIM905 - a list of words reads better as words
        "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 "
        "46 50 51 52 53 54 61 62 63 64 65 71 81 82 83"
    ).split()
)


def normalise_id_number(raw: str) -> str:
    """Upper-case the check character and drop spaces (customers and OCR both write ``x``)."""
    return re.sub(r"\s+", "", raw).upper()


def check_digit(first17: str) -> str:
    """The GB 11643 MOD 11-2 check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("need exactly 17 digits")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def has_valid_format(number: str) -> bool:
    return bool(_NUMBER_RE.match(normalise_id_number(number)))


def has_valid_check_digit(number: str) -> bool:
    n = normalise_id_number(number)
    return has_valid_format(n) and check_digit(n[:17]) == n[17]


def has_valid_region_code(number: str) -> bool:
    """Format of the 6-digit address code: a known province and a non-zero remainder."""
    n = normalise_id_number(number)
    return len(n) >= 6 and n[:6].isdigit() and n[:2] in PROVINCE_CODES and n[2:6] != "0000"


def birth_date_of(number: str) -> date | None:
    """The birth date embedded in digits 7–14, or None when it is not a real calendar date."""
    n = normalise_id_number(number)
    if len(n) < 14 or not n[6:14].isdigit():
        return None
    try:
        return date(int(n[6:10]), int(n[10:12]), int(n[12:14]))
    except ValueError:
        return None


def sex_of(number: str) -> str | None:
    """男 for an odd 17th digit, 女 for an even one."""
    n = normalise_id_number(number)
    if len(n) < 17 or not n[16].isdigit():
        return None
    return "男" if int(n[16]) % 2 else "女"


def age_on(birth: date, today: date) -> int:
    """Age in completed years (a person born on 29 Feb turns a year older on 1 Mar)."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


@dataclass(frozen=True, slots=True)
class IdNumberFacts:
    """What an ID number says about itself."""

    number: str
    format_ok: bool
    check_digit_ok: bool
    region_code_ok: bool
    birth_date: date | None
    sex: str | None

    @classmethod
    def of(cls, number: str) -> IdNumberFacts:
        n = normalise_id_number(number)
        return cls(
            number=n,
            format_ok=has_valid_format(n),
            check_digit_ok=has_valid_check_digit(n),
            region_code_ok=has_valid_region_code(n),
            birth_date=birth_date_of(n),
            sex=sex_of(n),
        )


def make_id_number(region: str, birth: date, sequence: int, *, valid: bool = True) -> str:
    """Build an ID number for synthetic material; a wrong check digit when ``valid`` is False."""
    if len(region) != 6 or not region.isdigit():
        raise ValueError("region code must be 6 digits")
    first17 = f"{region}{birth:%Y%m%d}{sequence % 1000:03d}"
    good = check_digit(first17)
    if valid:
        return first17 + good
    wrong = next(c for c in _CHECK_CHARS if c != good)
    return first17 + wrong


def is_valid(number: str, today: date) -> bool:
    """A number that can be someone's: format, region code, a real birth date not after
    ``today``, and the check character (orders refuse anything else, R-12)."""
    facts = IdNumberFacts.of(number)
    return (facts.format_ok and facts.region_code_ok and facts.check_digit_ok
            and facts.birth_date is not None and facts.birth_date <= today)


def age_of(number: str, today: date) -> int:
    """Age in completed years of the holder of a valid number."""
    born = birth_date_of(number)
    if born is None:
        raise ValueError("the number holds no birth date")
    return age_on(born, today)
