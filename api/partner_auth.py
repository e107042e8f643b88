"""The one authenticator of signed partner requests (issue 18): the bank app's backend
(bot/routes_bank.py) and the insurers' core systems (api/routes_insurer.py) call us server to
server, each request signed with HMAC-SHA256 (`security.partner_signing`: the wire format, the
timestamp window, single-use nonces in Redis).

A `Partner` names how one kind of caller is refused and audited; a `PartnerGate` is what a
request is checked against, built per request from the app's configuration by the route module.
The checks, in order: a body over the limit 413 (`body_too_large`); an unknown client id 401
(the partner's code; audited only where the partner says so); the client's own request limit
429 when the partner has one; then the signature, timestamp and nonce, each refusal 401 with
its code (`signature_missing`, `timestamp_out_of_window`, `nonce_invalid`, `signature_invalid`,
`nonce_replayed`) and audited as `<partner>.request.refused`, aggregated per address and minute
(`security.audit.RefusalLog`) so that an unsigned flood cannot grow the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aiohttp import web
from redis.asyncio import Redis

from api.auth import client_ip
from api.problems import ApiProblem
from security.audit import Actor, RefusalLog
from security.partner_signing import HEADER_CLIENT, NonceStore, SignatureError, verify_request
from security.ratelimit import RateLimiter


class SignedClient(Protocol):
    """A configured partner client: the secret its requests are signed with."""

    @property
    def api_secret(self) -> str: ...


C = TypeVar("C", bound=SignedClient)


@dataclass(frozen=True)
class Partner:
    """One kind of partner: `name` prefixes its nonces (`<name>:nonce`), its refusals
    (`<name>.request.refused`, object type `<name>_client`); `label` names its callers in the
    audit log (`<label>:<client id>`)."""

    name: str
    label: str
    # The refusal code of a client id that is not configured, and whether it is audited.
    unknown_client: str
    audit_unknown_client: bool


@dataclass(frozen=True)
class PartnerGate(Generic[C]):
    """What one request is checked against: the configured clients and limits, Redis (nonces,
    refusals) and the current time (seconds)."""

    clients: Mapping[str, C]
    redis: Redis
    now: int
    max_body_bytes: int
    nonce_ttl_seconds: int
    timestamp_tolerance_seconds: int
    # Requests per client and window, checked before the signature (the bank app's).
    per_client: RateLimiter | None = None


@dataclass(frozen=True)
class SignedCaller(Generic[C]):
    """An authenticated partner request: who, its configuration, the raw signed body, and the
    actor its acts are audited as."""

    client_id: str
    client: C
    body: bytes
    actor: Actor


async def authenticate(request: web.Request, partner: Partner,
                       gate: PartnerGate[C]) -> SignedCaller[C]:
    """Checks one signed partner request (module docstring); raises `ApiProblem`."""
    if request.content_length is not None and request.content_length > gate.max_body_bytes:
        raise ApiProblem(413, "body_too_large", "提交的内容过大")
    body = await request.read()
    if len(body) > gate.max_body_bytes:
        raise ApiProblem(413, "body_too_large", "提交的内容过大")
    given = request.headers.get(HEADER_CLIENT, "")
    client_id = given[:64]
    actor = Actor("service", client_id, f"{partner.label}:{client_id}"[:100], client_ip(request))
    log = RefusalLog(gate.redis)
    try:
        client = gate.clients.get(given)
        if client is None:
            if not partner.audit_unknown_client:
                raise ApiProblem(401, partner.unknown_client, "调用方未登记")
            raise SignatureError(partner.unknown_client)
        if gate.per_client is not None and (
                await gate.per_client.hit(client_id) > gate.per_client.limit):
            raise ApiProblem(429, "too_many_requests", "请求过于频繁，请稍后再试")
        nonces = NonceStore(gate.redis, f"{partner.name}:nonce", gate.nonce_ttl_seconds)
        await verify_request(request.headers, request.method, request.path_qs, body,
                             client.api_secret, nonces, gate.timestamp_tolerance_seconds,
                             gate.now)
    except SignatureError as exc:
        await log.record(actor, f"{partner.name}.request.refused", subject=exc.code,
                         object_type=f"{partner.name}_client", object_id=client_id,
                         details={"reason": exc.code, "path": request.path})
        raise ApiProblem(401, exc.code, "请求签名校验失败") from exc
    return SignedCaller(client_id, client, body, actor)
