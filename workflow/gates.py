"""Agent gates checked before a session is created and again before the call starts (R-03).

Licence and training valid, grade allows the product's grade, the reported position inside an
approved premises of the agent's branch and the request IP in that premises' network ranges.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import date

from models.org import GeofenceKind, Premises
from models.people import Agent
from models.sales import Product

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class Location:
    lat: float
    lng: float
    accuracy_m: float = 0.0


@dataclass(frozen=True)
class GateFailure:
    code: str
    message: str


@dataclass(frozen=True)
class GateResult:
    failures: list[GateFailure]
    premises: Premises | None

    @property
    def passed(self) -> bool:
        return not self.failures


def distance_m(a: Location, lat: float, lng: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(a.lat), math.radians(lat)
    dp, dl = p2 - p1, math.radians(lng - a.lng)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def point_in_polygon(lat: float, lng: float, polygon: list[list[float]]) -> bool:
    """Ray casting on (lat, lng) pairs; fine for premises-sized polygons."""
    inside = False
    n = len(polygon)
    for i in range(n):
        y1, x1 = polygon[i]
        y2, x2 = polygon[(i + 1) % n]
        if (y1 > lat) != (y2 > lat):
            x_cross = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lng < x_cross:
                inside = not inside
    return inside


def inside_geofence(premises: Premises, location: Location) -> bool:
    if premises.geofence_kind == GeofenceKind.CIRCLE:
        if premises.center_lat is None or premises.center_lng is None or not premises.radius_m:
            return False
        # A fix whose accuracy circle is larger than the fence proves nothing.
        if location.accuracy_m > premises.radius_m:
            return False
        return distance_m(location, premises.center_lat, premises.center_lng) <= premises.radius_m
    return point_in_polygon(location.lat, location.lng, premises.polygon or [])


def ip_allowed(premises: Premises, ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for cidr in premises.ip_cidrs or []:
        try:
            if address in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_agent(agent: Agent, product_grade: int | None, today: date) -> list[GateFailure]:
    """Licence and training valid; the grade check only when a product is known."""
    failures = []
    if agent.licence_expires < today:
        failures.append(GateFailure("licence_expired", "销售人员执业证已过期，不能发起远程双录"))
    if agent.training_expires < today:
        failures.append(GateFailure("training_expired", "销售人员培训已过期，请先完成培训"))
    if product_grade is not None and agent.grade < product_grade:
        failures.append(
            GateFailure("grade_insufficient", "销售人员的销售资质等级不足以销售该产品")
        )
    return failures


def check_location(
    premises_list: list[Premises], location: Location | None, ip: str
) -> tuple[list[GateFailure], Premises | None]:
    if location is None:
        return [GateFailure("location_missing", "请先允许获取定位，再发起远程双录")], None
    in_fence = [p for p in premises_list if p.active and inside_geofence(p, location)]
    if not in_fence:
        return [GateFailure("outside_premises", "当前位置不在已报备的销售场所内")], None
    for premises in in_fence:
        if ip_allowed(premises, ip):
            return [], premises
    return [GateFailure("ip_not_allowed", "当前网络不属于已报备销售场所的网络")], None


def check_gates(
    agent: Agent, product: Product, premises_list: list[Premises], location: Location | None,
    ip: str, today: date,
) -> GateResult:
    failures = check_agent(agent, product.grade, today)
    location_failures, premises = check_location(premises_list, location, ip)
    return GateResult(failures + location_failures, premises)
