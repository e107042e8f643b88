"""R-52: personal data encrypted at rest, masked in responses unless the role needs it, and
masked in logs."""

from __future__ import annotations

import logging

import pytest

from models.people import Customer
from security.crypto import DecryptionError, FieldCipher
from security.masking import MaskingFilter, mask_text
from tests.harness import Harness, id_number


async def test_id_numbers_are_encrypted_at_rest(harness: Harness) -> None:
    await harness.create_order(birth="19750505")
    number = id_number("19750505", seq="002")
    conn = Customer._meta.db
    rows = await conn.execute_query_dict('SELECT * FROM "customer"')
    dump = repr(rows)
    assert rows and "19750505" not in dump and "张三丰" not in dump and "138123" not in dump
    assert all(str(r["id_number_enc"]).startswith("v1.") for r in rows)
    assert number  # the plaintext exists only in the request


async def test_agents_see_masked_data_and_qa_sees_it_in_full(harness: Harness) -> None:
    walk = await harness.walk_to("created")
    agent_view = await harness.as_("agent01", "GET", f"/sessions/{walk.session_id}")
    customer = agent_view.body["order"]["customer"]
    assert customer["masked"] and "*" in customer["id_number"] and customer["name"] == "张**"
    assert customer["phone"] == "138****5678"
    qa_view = await harness.as_("qa01", "GET", f"/sessions/{walk.session_id}")
    assert qa_view.body["order"]["customer"]["name"] == "张三丰"
    assert "*" not in qa_view.body["order"]["customer"]["id_number"]


def test_ciphertexts_are_bound_to_their_column_and_key() -> None:
    cipher = FieldCipher(b"k" * 32)
    token = cipher.encrypt("110101195003071235", "customer.id_number")
    assert cipher.decrypt(token, "customer.id_number") == "110101195003071235"
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, "customer.name")
    with pytest.raises(DecryptionError):
        FieldCipher(b"j" * 32).decrypt(token, "customer.id_number")
    assert cipher.encrypt("x", "p") != cipher.encrypt("x", "p")  # random nonce
    assert cipher.index("x") == cipher.index("x")


def test_logs_mask_id_and_phone_numbers(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.masking")
    logger.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO, logger="test.masking"):
        logger.info("customer %s phone %s", "110101195003071235", "13812345678")
    assert "110101********1235" in caplog.text and "138****5678" in caplog.text
    assert "195003071235" not in caplog.text
    assert mask_text("no numbers here") == "no numbers here"


async def test_audit_details_are_masked(harness: Harness) -> None:
    from models.audit import AuditEntry
    from security import audit

    async with __import__("tortoise.transactions").transactions.in_transaction() as conn:
        await audit.record(conn, audit.Actor.system("t"), "test.pii",
                           details={"note": "id 110101195003071235"})
    entry = await AuditEntry.get(action="test.pii")
    assert entry.details["note"] == "id 110101********1235"
