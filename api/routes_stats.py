"""Statistics (R-55) for supervisors (their branch) and administrators (their institution)."""

from __future__ import annotations

from datetime import date
from typing import get_args

from aiohttp import web

from api.auth import staff
from api.problems import ApiProblem, json_response
from api.registry import Api
from reporting.statistics import GroupBy, Period, StatsQuery, compute
from security.roles import Permission, Scope

api = Api()


def _date(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ApiProblem(422, "validation_failed", f"参数 {name} 应为日期（YYYY-MM-DD）",
                         field=name) from exc


@api.endpoint("GET", "/stats", summary="Counts and rates by institution, branch, agent, "
              "product or period (R-55)", tag="statistics", permission=Permission.STATISTICS,
              query=("group_by", "period", "from", "to"))
async def get_stats(request: web.Request) -> web.Response:
    principal = staff(request)
    group_by = request.query.get("group_by", "branch")
    period = request.query.get("period", "month")
    if group_by not in get_args(GroupBy):
        raise ApiProblem(422, "validation_failed", "参数 group_by 无效", field="group_by")
    if period not in get_args(Period):
        raise ApiProblem(422, "validation_failed", "参数 period 无效", field="period")
    start, end = _date(request, "from"), _date(request, "to")
    if start and end and end <= start:
        raise ApiProblem(422, "validation_failed", "结束日期须晚于开始日期", field="to")
    # A supervisor sees the branch only; an administrator the institution.
    branch = principal.branch_id if principal.scope == Scope.BRANCH else None
    if principal.scope == Scope.BRANCH and branch is None:
        raise ApiProblem(403, "permission_denied", "您没有执行此操作的权限")
    result = await compute(StatsQuery(group_by=group_by,  # type: ignore[arg-type]
                                      institution_id=principal.institution_id,
                                      branch_id=branch, period=period,  # type: ignore[arg-type]
                                      start=start, end=end))
    return json_response({**result, "scope": "branch" if branch else "institution"})
