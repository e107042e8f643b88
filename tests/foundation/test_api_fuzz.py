"""Generated requests (schemathesis) against the app's own OpenAPI document, as an agent, a QA
inspector, an administrator, the engines' account, an auditor, a product owner, a supervisor, a
customer and an anonymous caller (each operation as the roles allowed to use it): bad input
is never answered with a 5xx, and every answer is what the document says (status code, media
type, body schema). A bounded, derandomized run; bench/fuzz.py runs the large campaign."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from tests.api_fuzz import FAKE_WECHAT_APPS, fake_wechat_environment, fuzz, target
from tests.channels.fake_wechat import FakeWeChat
from tests.harness import Harness

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(900)]


@pytest_asyncio.fixture
async def settings_overrides(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, object]]:
    """The channels talk to a fake WeChat on loopback (tests/channels/fake_wechat.py)."""
    fake = FakeWeChat()
    for app_id, secret in FAKE_WECHAT_APPS.items():
        fake.register_app(app_id, secret)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    for key, value in fake_wechat_environment(str(server.make_url(""))).items():
        monkeypatch.setenv(key, value)
    try:
        yield {}
    finally:
        await server.close()


async def test_generated_requests_get_documented_answers_and_never_a_5xx(
        harness: Harness) -> None:
    app = await target(harness)
    base_url = str(harness.client.make_url("")).rstrip("/")
    report = await asyncio.to_thread(fuzz, app.document, base_url, app.identities,
                                     examples_per_operation=30, path_values=app.path_values)
    assert report.cases >= 2000, report.cases
    assert len(report.per_operation) == sum(len(ops) for ops in app.document["paths"].values())
    kinds = report.failure_kinds()
    assert report.server_errors == 0 and not kinds, "\n".join(
        f"{n} × {k}" for k, n in kinds.most_common(40))
    # Not only refusals: the generated valid input reaches the handlers' success paths too.
    assert sum(n for status, n in report.statuses.items() if status < 300) >= 300, report.statuses
