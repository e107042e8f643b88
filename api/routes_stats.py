"""Statistics (R-55) for supervisors (their branch) and administrators (their institution)."""

from __future__ import annotations

from typing import get_args

from aiohttp import web

from api.auth import staff
from api.http import ChoiceQuery, DateQuery
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import Stats
from reporting.statistics import GroupBy, Period, StatsQuery, compute
from security.roles import Permission, Scope

api = Api()


GROUP_BY = ChoiceQuery("group_by", get_args(GroupBy), default="branch")
PERIOD = ChoiceQuery("period", get_args(Period), default="month")
FROM, TO = DateQuery("from"), DateQuery("to")


@api.endpoint("GET", "/stats", summary="Counts and rates by institution, branch, agent, "
              "product or period (R-55)", tag="statistics", permission=Permission.STATISTICS,
              query=(GROUP_BY, PERIOD, FROM, TO), returns=Stats,
              responses={403: "a supervisor without a branch"})
async def get_stats(request: web.Request) -> web.Response:
    principal = staff(request)
    group_by, period = GROUP_BY.read(request), PERIOD.read(request)
    start, end = FROM.read(request), TO.read(request)
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
