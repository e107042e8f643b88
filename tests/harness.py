"""A running app with an HTTP client, and helpers that walk a session through its lifecycle
with the real API, so each test states only what it is about."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import ResponseError
from taskiq.api import run_receiver_task

from api.keys import DATABASE, DEPS, JOBS, REDIS
from app.config import Config
from app.database import activate
from app.factory import create_app
from app.seed import DEMO_PRODUCT_CODE, DEMO_USERS
from media.identity.idnumber import check_digit
from workflow.consent_texts import CONSENT_TEXTS, RISK_SENTENCE
from workflow.core import WorkflowDeps

PASSWORDS = {username: password for username, password, _, _ in DEMO_USERS}
HERE = {"lat": 29.8685, "lng": 121.5442, "accuracy_m": 20}  # inside the demo premises
_counter = itertools.count(1)


def id_number(birth: str = "19800101", region: str = "330203", seq: str = "001") -> str:
    first17 = region + birth + seq
    return first17 + check_digit(first17)


def png_bytes(width: int = 60, height: int = 20) -> bytes:
    raw = b"".join(b"\x00" + b"\x20\x20\x20" * width for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + tag + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def consent_body(agree_recording: bool = True, agree_pi: bool = True) -> dict[str, Any]:
    agreed = {"recording": agree_recording, "personal_information": agree_pi}
    return {"answers": [
        {"kind": t.kind.value, "text_hash": t.sha256, "agreed": agreed[t.kind.value]}
        for t in CONSENT_TEXTS.values()
    ]}


PASSED = {"passed": True, "engine": "test-engine", "score": 0.9}
FAILED = {"passed": False, "engine": "test-engine", "score": 0.1, "reason": "人脸比对未通过"}


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]
    content_type: str


@dataclass
class Walk:
    """A session driven through the API: its id and the customer's token."""

    session_id: str
    customer_token: str = ""
    invitation_token: str = ""
    order_id: int = 0


@dataclass
class Harness:
    config: Config
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def app(self) -> Any:
        return self.client.server.app

    @property
    def deps(self) -> WorkflowDeps:
        return self.app[DEPS]  # type: ignore[no-any-return]

    @contextlib.asynccontextmanager
    async def jobs_running(self, max_async_tasks: int = 4) -> AsyncIterator[None]:
        """The job receiver, as the server runs it by default (the harness leaves it off);
        started in the test's context so the jobs see this test's database."""
        broker = self.app[JOBS].broker
        # The harness empties Redis after the app started, consumer group included.
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it is there already
            await self.app[REDIS].xgroup_create(broker.queue_name, broker.consumer_group_name,
                                                id="0", mkstream=True)
        receiver = asyncio.create_task(run_receiver_task(broker, max_async_tasks=max_async_tasks,
                                                         run_startup=False))
        try:
            yield
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    @property
    def redis(self) -> Any:
        return self.app[REDIS]

    async def close(self) -> None:
        await self.client.close()

    async def request(
        self, method: str, path: str, *, token: str | None = None, json: Any = None,
        data: bytes | str | None = None, headers: dict[str, str] | None = None,
    ) -> Response:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        # API paths are given without the /api/v1 prefix; pages and "/" as they are.
        url = path if path.startswith(("/api", "/h5")) or path == "/" else "/api/v1" + path
        async with self.client.request(method, url, json=json, data=data,
                                       headers=all_headers) as resp:
            ctype = resp.content_type
            if ctype in ("application/json", "application/problem+json"):
                body: Any = await resp.json(content_type=None)
            else:
                body = await resp.read()
            return Response(resp.status, body, dict(resp.headers), ctype)

    async def login(self, username: str) -> str:
        if username not in self.tokens:
            r = await self.request("POST", "/auth/login",
                                   json={"username": username, "password": PASSWORDS[username]})
            assert r.status == 200, r.body
            self.tokens[username] = r.body["token"]
        return self.tokens[username]

    async def as_(self, username: str, method: str, path: str, **kwargs: Any) -> Response:
        return await self.request(method, path, token=await self.login(username), **kwargs)

    async def create_order(self, agent: str = "agent01", *, birth: str = "19800101",
                           product: str = DEMO_PRODUCT_CODE) -> int:
        n = next(_counter)
        r = await self.as_(agent, "POST", "/orders", json={
            "application_no": f"APP-{n:06d}-{birth}", "product_code": product,
            "customer": {"name": "张三丰", "id_number": id_number(birth, seq=f"{n % 1000:03d}"),
                         "phone": "13812345678"},
            "premium": "12000.00", "payment_years": 10, "sum_insured": "200000.00",
            "extra_values": {"annuity_start_age": 60, "annual_annuity": "10000.00",
                             "account_allocation": "稳健型投资账户100%",
                             "risk_assessment_result": "平衡型"},
        })
        assert r.status == 201, r.body
        return int(r.body["id"])

    async def create_session(self, agent: str = "agent01", *, birth: str = "19800101",
                             location: dict[str, float] | None = HERE,
                             product: str = DEMO_PRODUCT_CODE) -> Walk:
        order_id = await self.create_order(agent, birth=birth, product=product)
        r = await self.as_(agent, "POST", "/sessions",
                           json={"order_id": order_id, "location": location})
        assert r.status == 201, r.body
        return Walk(r.body["id"], order_id=order_id)

    async def walk_to(self, state: str, agent: str = "agent01", *, birth: str = "19800101",
                      walk: Walk | None = None, product: str = DEMO_PRODUCT_CODE) -> Walk:
        """Drives a new (or the given) session forward through the API until `state`."""
        order = ["created", "invited", "opened", "consented", "identity_verified", "in_call",
                 "disclosing", "signing", "completed", "qa_pending"]
        target = order.index(state)
        w = walk or await self.create_session(agent, birth=birth, product=product)
        sid = w.session_id
        done = order.index(await self.state(w))
        # Each step below runs only when the session has not passed it yet.
        if done < 1 <= target:
            r = await self.as_(agent, "POST", f"/sessions/{sid}/invitation", json={})
            assert r.status == 201, r.body
            w.invitation_token = r.body["token"]
        if done < 2 <= target:
            r = await self.request("POST", "/invitations/open",
                                   json={"token": w.invitation_token})
            assert r.status == 200, r.body
            w.customer_token = r.body["customer_token"]
        if done < 3 <= target:
            r = await self.request("POST", "/customer/consent", token=w.customer_token,
                                   json=consent_body())
            assert r.status == 200 and r.body["state"] == "consented", r.body
        if done < 4 <= target:
            r = await self.as_("engine01", "POST", f"/sessions/{sid}/identity-checks",
                               json={"ocr": PASSED, "face": PASSED, "liveness": PASSED})
            assert r.status == 201 and r.body["state"] == "identity_verified", r.body
        if done < 5 <= target:
            r = await self.as_(agent, "POST", f"/sessions/{sid}/call/start",
                               json={"location": HERE})
            assert r.status == 200, r.body
        if done < 6 <= target:
            r = await self.as_(agent, "POST", f"/sessions/{sid}/script/start")
            assert r.status == 200, r.body
        if done < 7 <= target:
            await self.play_script(w, agent)
        if done < 8 <= target:
            # The library scripts sign within the script; a script without it signs now.
            if not (await self.request("GET", "/customer/session",
                                       token=w.customer_token)).body["signed"]:
                await self.sign(w)
            r = await self.as_(agent, "POST", f"/sessions/{sid}/complete")
            assert r.status == 200 and r.body["state"] == "completed", r.body
        if done < 9 <= target:
            from workflow.expiry import sweep

            result = await sweep(self.deps)
            assert sid in {str(s) for s in result.sealed}
        return w

    async def current_step(self, w: Walk) -> dict[str, Any] | None:
        r = await self.request("GET", "/customer/session", token=w.customer_token)
        assert r.status == 200, r.body
        return r.body["current_step"]  # type: ignore[no-any-return]

    async def ack(self, w: Walk, step_id: str, answer: str = "affirmative",
                  event_id: str | None = None) -> Response:
        return await self.request("POST", "/customer/acknowledgements", token=w.customer_token,
                                  json={"step_id": step_id, "answer": answer,
                                        "client_event_id": event_id or f"ev-{next(_counter):08d}"})

    async def play_script(self, w: Walk, agent: str = "agent01",
                          until: str | None = None) -> list[str]:
        """Answers every step as its kind needs (button, hand-copy or signature pad, or the
        agent moving past a step that needs no answer); returns the step ids in order."""
        played = []
        while (step := await self.current_step(w)) is not None:
            if step["id"] == until:
                break
            played.append(step["id"])
            if step["answer"] in ("handwritten_copy", "signature"):
                await self.sign(w, step.get("copy_text") or "本人亲笔签名")
            elif step["answer"] == "none":
                r = await self.as_(agent, "POST", f"/sessions/{w.session_id}/script/advance",
                                   json={"step_id": step["id"]})
                assert r.status == 200, r.body
            else:
                r = await self.ack(w, step["id"])
                assert r.status == 201, r.body
        return played

    async def sign(self, w: Walk, sentence: str = RISK_SENTENCE) -> Response:
        r = await self.request("POST", "/customer/signature", token=w.customer_token, json={
            "risk_sentence": sentence,
            "image_base64": base64.b64encode(png_bytes()).decode(),
        })
        assert r.status == 201, r.body
        return r

    async def state(self, w: Walk) -> str:
        r = await self.as_("qa01", "GET", f"/sessions/{w.session_id}")
        assert r.status == 200, r.body
        return str(r.body["state"])


async def start_harness(config: Config) -> Harness:
    app = create_app(config)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    # Make the app's database the current Tortoise context for the test itself as well.
    activate(app[DATABASE])
    await app[REDIS].flushdb()
    return Harness(config, client)
