"""R-02 and R-03: the institution is accepted, and the agent's licence, training, grade,
location and network are checked before a session is created and before the call starts.
Each refusal is a clear 403 and an audit entry."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from models.audit import AuditEntry
from models.org import GeofenceKind, Institution, Premises
from models.people import Agent, User
from models.sales import Product
from tests.harness import HERE, Harness
from workflow.gates import Location, distance_m, inside_geofence, ip_allowed, point_in_polygon

FAR_AWAY = {"lat": 39.9042, "lng": 116.4074, "accuracy_m": 10}  # Beijing, not Ningbo


async def _agent01() -> Agent:
    user = await User.get(username="agent01")
    return await Agent.get(user_id=user.id)


async def _refused(harness: Harness, location: dict[str, float] | None, code: str) -> None:
    order_id = await harness.create_order()
    r = await harness.as_("agent01", "POST", "/sessions",
                          json={"order_id": order_id, "location": location})
    assert r.status == 403, r.body
    assert r.body["code"] == "agent_gate_failed"
    assert code in [f["code"] for f in r.body["failures"]]
    entry = await AuditEntry.filter(action="session.create.gate_failed").order_by("-id").first()
    assert entry is not None and entry.outcome == "denied" and code in entry.details["failures"]


async def test_expired_licence_blocks_the_session_R03(harness: Harness) -> None:
    agent = await _agent01()
    agent.licence_expires = date.today() - timedelta(days=1)
    await agent.save()
    await _refused(harness, HERE, "licence_expired")


async def test_expired_training_blocks_the_session_R03(harness: Harness) -> None:
    agent = await _agent01()
    agent.training_expires = date.today() - timedelta(days=1)
    await agent.save()
    await _refused(harness, HERE, "training_expired")


async def test_grade_below_the_product_blocks_the_session_R03(harness: Harness) -> None:
    await Product.filter(code="YA-ZSS-001").update(grade=5)
    await _refused(harness, HERE, "grade_insufficient")


async def test_location_outside_premises_blocks_the_session_R03(harness: Harness) -> None:
    await _refused(harness, FAR_AWAY, "outside_premises")


async def test_missing_location_blocks_the_session_R03(harness: Harness) -> None:
    await _refused(harness, None, "location_missing")


async def test_network_outside_the_premises_blocks_the_session_R03(harness: Harness) -> None:
    await Premises.all().update(ip_cidrs=["10.20.0.0/16"])
    await _refused(harness, HERE, "ip_not_allowed")


async def test_unaccepted_institution_cannot_record_R02(harness: Harness) -> None:
    order_id = await harness.create_order()
    await Institution.filter(code="DEMO-BANK").update(accepted=False)
    r = await harness.as_("agent01", "POST", "/sessions",
                          json={"order_id": order_id, "location": HERE})
    assert r.status == 403 and r.body["code"] == "institution_not_accepted"
    assert await AuditEntry.filter(action="session.create.denied").exists()


async def test_gates_are_checked_again_when_the_call_starts_R03(harness: Harness) -> None:
    walk = await harness.walk_to("identity_verified")
    r = await harness.as_("agent01", "POST", f"/sessions/{walk.session_id}/call/start",
                          json={"location": FAR_AWAY})
    assert r.status == 403 and r.body["code"] == "agent_gate_failed"
    assert await harness.state(walk) == "identity_verified"
    assert await AuditEntry.filter(action="session.start_call.gate_failed").exists()


def _premises(**kwargs: object) -> Premises:
    return Premises(name="p", branch_id=1, **kwargs)


@pytest.mark.parametrize(("lat", "lng", "inside"), [
    (29.8683, 121.5440, True), (29.8700, 121.5440, True), (29.8720, 121.5440, False),
])
def test_circle_geofence(lat: float, lng: float, inside: bool) -> None:
    premises = _premises(geofence_kind=GeofenceKind.CIRCLE, center_lat=29.8683,
                         center_lng=121.5440, radius_m=300.0)
    assert inside_geofence(premises, Location(lat, lng, 10)) is inside


def test_a_fix_less_precise_than_the_fence_proves_nothing() -> None:
    premises = _premises(geofence_kind=GeofenceKind.CIRCLE, center_lat=29.8683,
                         center_lng=121.5440, radius_m=300.0)
    assert not inside_geofence(premises, Location(29.8683, 121.5440, accuracy_m=2000))


def test_polygon_geofence() -> None:
    square = [[29.0, 121.0], [29.0, 122.0], [30.0, 122.0], [30.0, 121.0]]
    assert point_in_polygon(29.5, 121.5, square)
    assert not point_in_polygon(30.5, 121.5, square)
    premises = _premises(geofence_kind=GeofenceKind.POLYGON, polygon=square)
    assert inside_geofence(premises, Location(29.2, 121.9))


def test_ip_ranges_v4_and_v6() -> None:
    premises = _premises(ip_cidrs=["192.0.2.0/24", "2001:db8::/32", "not-a-cidr"])
    assert ip_allowed(premises, "192.0.2.77")
    assert ip_allowed(premises, "2001:db8::1")
    assert not ip_allowed(premises, "198.51.100.1")
    assert not ip_allowed(premises, "garbage")


def test_haversine_distance_is_about_right() -> None:
    # Ningbo to Hangzhou is about 140 km as the crow flies.
    assert 130_000 < distance_m(Location(29.8683, 121.5440), 30.2741, 120.1551) < 150_000
