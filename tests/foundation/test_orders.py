"""Orders refuse resident ID numbers that cannot be anyone's (GB 11643, R-12), with a Chinese
message the agent can act on, and accept a valid one."""

from __future__ import annotations

from datetime import date

import pytest

from rules.idnumber import make_id_number
from tests.harness import Harness

VALID = make_id_number("330203", date(1980, 5, 17), 123)


def _order(id_number: str, suffix: str) -> dict[str, object]:
    return {"application_no": f"APP-ORD-{suffix}", "product_code": "YA-ZSS-001",
            "customer": {"name": "张三", "id_number": id_number}, "premium": "5000",
            "payment_years": 10, "sum_insured": "100000"}


@pytest.mark.parametrize("number", [
    make_id_number("330203", date(1980, 5, 17), 123, valid=False),  # wrong check character
    make_id_number("990203", date(1980, 5, 17), 123),  # no such province
    make_id_number("330203", date(2099, 1, 1), 123),  # born in the future
    "33020319800231123X",  # 31 February
], ids=["check-digit", "region", "future-birth", "no-such-date"])
async def test_an_impossible_id_number_is_refused_R12(harness: Harness, number: str) -> None:
    r = await harness.as_("agent01", "POST", "/orders", json=_order(number, number[-4:]))
    assert r.status == 422, r.body
    assert r.body["code"] == "id_number_invalid" and "身份证号码无效" in r.body["detail"]


async def test_a_valid_id_number_with_a_lower_case_x_is_accepted_R12(harness: Harness) -> None:
    number = next(make_id_number("110101", date(1975, 3, 9), n) for n in range(1000)
                  if make_id_number("110101", date(1975, 3, 9), n).endswith("X"))
    r = await harness.as_("agent01", "POST", "/orders",
                          json=_order(number.lower(), "X"))
    assert r.status == 201, r.body
