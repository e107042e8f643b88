"""The rehearsal's small parts: what the customer says to a step, which link it opens, the card
it carries (R-12, R-24), and the command's exit code and printed Chinese reason when the server
refuses."""

from __future__ import annotations

import asyncio
import io
from contextlib import redirect_stdout
from datetime import date

import pytest

from app.cli import build_parser
from rehearsal.api import RehearsalError
from rehearsal.cli import EXIT_FAILED, EXIT_USAGE, main
from rehearsal.customer import invitation_token
from rehearsal.face import card_identity
from rehearsal.voice import asked_word, spoken_answer
from tests.harness import Harness, id_number

pytestmark = pytest.mark.timeout(60)


def test_the_customer_says_what_the_step_asks_for_or_yes_to_its_question_R24() -> None:
    assert spoken_answer("……如果有任何内容您没有听清，请不要点击确认。请问您是否清楚？"
                         "请回答“清楚”。") == "清楚。"
    assert spoken_answer("……请问您是否已了解？") == "是的，我已了解。"
    assert spoken_answer("张三，请确认本项，您是否清楚？") == "是的，我清楚。"
    assert spoken_answer("本产品由甬安人寿承保。") == "好的，我明白了。"
    # A spoken-answer step: a yes with what the server listens for (media/voice/answers.py).
    assert asked_word("……请问您是否清楚？请回答“清楚”。") == "是的，我清楚。"
    assert asked_word("……请您回答“同意”。") == "是的，我同意。"
    assert asked_word("……请问您是否已如实告知？") == "是的，我如实告知。"
    assert asked_word("请您确认。") == "是的，我清楚。"


def test_the_customer_opens_a_link_or_its_token_and_nothing_else() -> None:
    token = "9qZ3qe3pRzGh1nfHIRofEJ468EkWhamRpRDM1AvQMo0"
    assert invitation_token(f"http://127.0.0.1:8080/h5/invite/{token}") == token
    assert invitation_token(token) == token
    with pytest.raises(RehearsalError, match="not an invitation link"):
        invitation_token("http://127.0.0.1:8080/h5/wx/abc?code=1")


def test_the_card_carries_the_order_s_name_and_number_and_is_valid_today_R12() -> None:
    card = card_identity("张三", "110101195003071235", date(2026, 6, 1))
    assert (card.name, card.id_number, card.birth_date, card.sex) == (
        "张三", "110101195003071235", date(1950, 3, 7), "男")
    assert card.valid_from <= date(2026, 6, 1) and card.valid_until is None  # 长期 past 46
    assert card.address.startswith("北京市东城区") and "东城分局" in card.issuing_authority
    young = card_identity("李四", id_number("19900101"), date(2026, 6, 1))
    assert young.valid_until is not None and young.valid_until > date(2026, 6, 1)
    with pytest.raises(RehearsalError, match="not a valid resident ID number"):
        card_identity("王五", "110101195003071234", date(2026, 6, 1))


def test_without_a_party_to_play_the_command_is_a_usage_error() -> None:
    args = build_parser().parse_args(["rehearse", "00000000-0000-0000-0000-000000000000"])
    assert main(args) == EXIT_USAGE


@pytest.mark.one_database
async def test_a_refusal_exits_non_zero_with_the_server_s_chinese_reason(
    harness: Harness,
) -> None:
    w = await harness.walk_to("consented")
    args = build_parser().parse_args([
        "rehearse", w.session_id, "--base-url", str(harness.client.make_url("/")),
        "--agent", "agent01:not-the-password", "--timeout", "30"])
    out = io.StringIO()
    with redirect_stdout(out):
        # The command runs its own event loop; the server runs in this one.
        code = await asyncio.to_thread(main, args)
    assert code == EXIT_FAILED, out.getvalue()
    assert "refused" in out.getvalue() and "POST /auth/login: 401" in out.getvalue()
    assert "「" in out.getvalue(), out.getvalue()  # the server's Chinese reason, quoted
