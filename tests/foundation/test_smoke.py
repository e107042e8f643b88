"""The whole lifecycle through the API: the curl walk-through of the README, as a test."""

from tests.harness import Harness


async def test_a_session_walks_from_creation_to_qa_pending(harness: Harness) -> None:
    walk = await harness.walk_to("qa_pending")
    assert await harness.state(walk) == "qa_pending"
