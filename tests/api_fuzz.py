"""Generated requests against the app's own OpenAPI document (schemathesis): every operation,
as every kind of caller it accepts, with valid and invalid input; each answer checked.

Used by tests/foundation/test_api_fuzz.py (a bounded run in the suite) and bench/fuzz.py (the
large campaign). The checks: no 5xx (not_a_server_error), the status code is documented
(status_code_conformance), the body matches its documented schema (response_schema_conformance)
and is of a documented media type (content_type_conformance).

Runs in a thread of its own (requests are blocking): the server is an aiohttp app in another
thread's event loop, or another process, reached by URL.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure as CheckFailure
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance,
          content_type_conformance]
# The staff token would be revoked by its own logout; logout is fuzzed without a token.
NOT_WITH_TOKENS = {("post", "/api/v1/auth/logout")}


@dataclass(frozen=True)
class Identity:
    """A caller: a role name, its bearer token (None: anonymous) and, for staff, the
    permissions of its role (an operation is fuzzed as the callers allowed to use it)."""

    name: str
    token: str | None
    kind: str  # "staff" | "customer" | "none"
    permissions: frozenset[str] = frozenset()


@dataclass
class Failure:
    operation: str
    identity: str
    status: int | None
    title: str
    curl: str


@dataclass
class Report:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    failures: list[Failure] = field(default_factory=list)
    per_operation: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def merge(self, other: Report) -> None:
        self.cases += other.cases
        self.statuses.update(other.statuses)
        self.server_errors += other.server_errors
        self.failures += other.failures
        self.per_operation.update(other.per_operation)
        self.seconds += other.seconds

    def failure_kinds(self) -> Counter[str]:
        return Counter(f"{f.operation} [{f.identity}] {f.title}" for f in self.failures)


def _identities_for(operation: dict[str, Any], identities: Iterable[Identity]) -> list[Identity]:
    schemes = {name for requirement in operation.get("security") or [] for name in requirement}
    if "staffToken" in schemes:
        staff = [i for i in identities if i.kind == "staff"]
        allowed = [i for i in staff if operation.get("x-permission") in i.permissions]
        return allowed or staff
    if "customerToken" in schemes:
        return [i for i in identities if i.kind == "customer"]
    return [i for i in identities if i.kind == "none"]


def fuzz(document: dict[str, Any], base_url: str, identities: list[Identity], *,
         examples_per_operation: int, seed: int = 0,
         path_values: dict[str, Any] | None = None,
         only: Callable[[str, str], bool] | None = None,
         progress: Callable[[str], None] | None = None) -> Report:
    """Runs about `examples_per_operation` generated cases per operation (split between its
    identities and between valid and invalid input; half of the valid ones, where a path
    parameter names a known object in `path_values`, aim at that object)."""
    schema = schemathesis.openapi.from_dict(document)
    report = Report()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation raises
        method, path = operation.method.lower(), operation.path
        if only is not None and not only(method, path):
            continue
        raw = document["paths"][path][method]
        callers = _identities_for(raw, identities)
        if (method, path) in NOT_WITH_TOKENS:
            callers = [Identity("anonymous", None, "none")]
        known = {name: value for name, value in (path_values or {}).items()
                 if "{" + name + "}" in path}
        plans: list[tuple[GenerationMode, dict[str, Any]]] = [
            (GenerationMode.POSITIVE, {}), (GenerationMode.NEGATIVE, {})]
        if known:
            plans.append((GenerationMode.POSITIVE, known))
        per_run = max(1, math.ceil(examples_per_operation / (len(callers) * len(plans))))
        for caller in callers:
            for mode, pinned in plans:
                part = _run(operation, mode, pinned, caller, base_url, session, per_run, seed)
                report.merge(part)
        if progress is not None:
            progress(f"{method.upper()} {path}: {report.per_operation[f'{method} {path}']} "
                     f"cases, {report.server_errors} 5xx so far")
    session.close()
    return report


def _run(operation: Any, mode: GenerationMode, pinned: dict[str, Any], caller: Identity,
         base_url: str, session: requests.Session, examples: int, seed: int) -> Report:
    report = Report()
    label = f"{operation.method.lower()} {operation.path}"
    headers = {"Authorization": f"Bearer {caller.token}"} if caller.token else {}
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned or None)
    started = time.perf_counter()

    # Seed 0: derandomized (the suite's run is the same every time); else seeded by `seed`.
    @hypothesis.settings(max_examples=examples, derandomize=seed == 0, database=None,
                         deadline=None, phases=[Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=strategy)
    def one(case: Any) -> None:
        try:
            response = case.call(base_url=base_url, session=session, headers=headers,
                                 timeout=30, allow_redirects=False)
        except requests.RequestException as exc:
            report.failures.append(Failure(label, caller.name, None,
                                           f"no answer: {type(exc).__name__}", ""))
            report.cases += 1
            return
        report.cases += 1
        report.per_operation[label] += 1
        report.statuses[response.status_code] += 1
        if response.status_code >= 500:
            report.server_errors += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (CheckFailure, FailureGroup) as exc:  # every failed check
            for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                title = getattr(failure, "title", type(failure).__name__)
                report.failures.append(Failure(
                    label, caller.name, response.status_code, str(title),
                    case.as_curl_command(headers=headers)))

    if seed:
        one = hypothesis.seed(seed)(one)
    # Unsatisfiable: nothing invalid to send (an operation without parameters or body).
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        one()
    report.seconds = time.perf_counter() - started
    return report


# -- what both runs set up (tests/foundation/test_api_fuzz.py, bench/fuzz.py) ----------------

STAFF = ("agent01", "qa01", "admin01", "engine01", "auditor01", "po01", "sup01")
FAKE_WECHAT_APPS = {"wx0fa11ce0ffee0001": "f" * 32, "wx0fa11ce0ffee0002": "e" * 32}


@dataclass(frozen=True)
class Target:
    """What the fuzzer needs of a running app: its document, the callers and known ids."""

    document: dict[str, Any]
    identities: list[Identity]
    path_values: dict[str, Any]


async def target(harness: Any) -> Target:
    """The callers (every staff role, a customer with an opened session, anonymous), the
    OpenAPI document and ids that exist, from a tests.harness.Harness on the app."""
    walk = await harness.walk_to("opened")
    identities = []
    for name in STAFF:
        me = (await harness.as_(name, "GET", "/auth/me")).body
        identities.append(Identity(name, harness.tokens[name], "staff",
                                   frozenset(me["permissions"])))
    identities += [Identity("customer", walk.customer_token, "customer"),
                   Identity("anonymous", None, "none")]
    document = (await harness.request("GET", "/api/v1/openapi.json")).body
    known = {"session_id": walk.session_id, "order_id": walk.order_id, "version_id": 1}
    return Target(document, identities, known)


def fake_wechat_environment(api_base_url: str) -> dict[str, str]:
    """The settings that point both channels at a fake WeChat (tests/channels/fake_wechat.py)
    registered with FAKE_WECHAT_APPS: the real one is unreachable here, and its 503 would
    count as a server error."""
    (official, official_secret), (mini, mini_secret) = FAKE_WECHAT_APPS.items()
    return {"SHUANGLU_WECHAT_APP_ID": official, "SHUANGLU_WECHAT_APP_SECRET": official_secret,
            "SHUANGLU_WECHAT_MP_APP_ID": mini, "SHUANGLU_WECHAT_MP_APP_SECRET": mini_secret,
            "SHUANGLU_WECHAT_API_BASE_URL": api_base_url.rstrip("/"),
            "SHUANGLU_CHANNELS_RUN_WORKER": "false"}

