"""A running app with an HTTP client, and helpers that walk a session through its lifecycle
with the real API, so each test states only what it is about.

The walk has no real call (the tests of the call hub and the browser tests have one): where the
call hub would report to the workflow, the harness reports the same facts through the same
functions (`workflow.media_events`): both parties' media connected and recorded, each step's
speech played in full to the customer (or the agent heard reading it), and, before completing,
the three recorded streams registered as segments covering the whole call. The segment files it
writes are placeholders, not decodable media; the QA tests that look at media make real WebM
segments (tests/qa/simulate.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer

from api.keys import DATABASE, DEPS, JOBS, REDIS
from app.factory import create_app
from app.seed import DEMO_PRODUCT_CODE, DEMO_USERS
from infra.config import Config
from infra.database import activate
from infra.tasks import cancel_and_wait
from models.sessions import RecordingSession, SessionEvent
from rules.idnumber import check_digit
from security.audit import Actor
from storage.local import LocalFolderStore
from tests.written import read_documents, written_body
from workflow import media_events
from workflow.call import NewRecording, register_recording
from workflow.consent_texts import CONSENT_TEXTS
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
    # For a server in another process: the workflow dependencies (its database and Redis)
    # through which the harness reports what the call hub would.
    media_deps: WorkflowDeps | None = None

    @property
    def app(self) -> Any:
        return cast(TestServer, self.client.server).app

    @property
    def deps(self) -> WorkflowDeps:
        if self.media_deps is not None:
            return self.media_deps
        return self.app[DEPS]  # type: ignore[no-any-return]

    @property
    def files(self) -> Path:
        """The evidence folder: the harness's app stores in a local folder (storage.local)."""
        store = self.deps.storage
        assert isinstance(store, LocalFolderStore), store
        return store.root

    @contextlib.asynccontextmanager
    async def jobs_running(self, max_async_tasks: int = 4) -> AsyncIterator[None]:
        """The job receiver, as the server runs it by default (the harness leaves it off);
        started in the test's context so the jobs see this test's database. The receiver
        creates the consumer group itself (the harness empties Redis after start-up)."""
        receiver = asyncio.create_task(self.app[JOBS].receive(max_async_tasks))
        try:
            yield
        finally:
            await cancel_and_wait(receiver, "the test's job receiver")

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
            await self.connect_media(w)
        if done < 6 <= target:
            await self.pin_speech(w)
            r = await self.as_(agent, "POST", f"/sessions/{sid}/script/start")
            assert r.status == 200, r.body
        if done < 7 <= target:
            await self.play_script(w, agent)
        if done < 8 <= target:
            # The library scripts sign within the script; a script without it signs now.
            if not (await self.request("GET", "/customer/session",
                                       token=w.customer_token)).body["signed"]:
                await self.sign(w)
            await self.record_call(w)
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
        """Hears every step and answers it as its kind needs (button, hand-copy or signature
        pad, or the agent moving past a step that needs no answer); returns the step ids in
        order. With `until`, stops at that step once it was heard, before answering it."""
        played = []
        while (step := await self.current_step(w)) is not None:
            if step["id"] == until:
                await self.hear(w)  # reached and read: the test acts on it
                break
            played.append(step["id"])
            await self.play_step(w, step, agent)
        return played

    async def play_step(self, w: Walk, step: dict[str, Any], agent: str = "agent01") -> None:
        """Hears the current step and answers it as its kind needs."""
        await self.hear(w)
        if step["answer"] == "show_document":
            await read_documents(self, w.session_id, w.customer_token)
        if step["answer"] in ("handwritten_copy", "signature"):
            await self.sign(w)
        elif step["answer"] == "none":
            if step["speaker"] == "tts":
                return  # moved on by itself once its speech played in full
            r = await self.as_(agent, "POST", f"/sessions/{w.session_id}/script/advance",
                               json={"step_id": step["id"]})
            assert r.status == 200, r.body
        else:
            r = await self.ack(w, step["id"])
            assert r.status == 201, r.body

    # -- what the call hub would report (see the module docstring) ----------------------------

    async def connect_media(self, w: Walk, roles: tuple[str, ...] = ("customer", "agent")) -> None:
        """Both parties' media connected and recorded."""
        for role in roles:
            await media_events.party_connected(self.deps, _uuid(w), role, recording=True)

    async def pin_speech(self, w: Walk) -> None:
        """What the speech job pins on each TTS step (R-23), without rendering it (the TTS tests
        render for real)."""
        session = await RecordingSession.get(id=w.session_id)
        steps = [{**s, "audio": {"duration_ms": 2000, "engine": "espeak", "voice": "test",
                                 "sha256": hashlib.sha256(s["text"].encode()).hexdigest(),
                                 "cache_key": "not-rendered-in-these-tests"}}
                 if s.get("speaker") == "tts" and not s.get("audio") else s
                 for s in session.steps]
        await RecordingSession.filter(id=w.session_id).update(steps=steps)

    async def hear(self, w: Walk) -> None:
        """The current step is read in full: its speech played to the connected customer
        (a step needing no answer then moves on by itself), or the agent heard reading it."""
        session = await RecordingSession.get(id=w.session_id)
        step = session.steps[session.current_step]
        if step["speaker"] == "agent":
            assert await media_events.agent_voice(self.deps, _uuid(w), step["id"], 600_000)
            return
        clip_id = f"{step['id']}@{session.event_seq}"
        await media_events.speech_started(self.deps, _uuid(w), clip_id)
        await media_events.clip_finished(self.deps, _uuid(w), clip_id, 2000, 2000, True)

    async def record_call(self, w: Walk) -> None:
        """The three streams recorded across the whole call, as the hub registers them when the
        room closes (placeholder files, one segment per stream and stretch between
        interruptions)."""
        session = await RecordingSession.get(id=w.session_id)
        assert session.recording_started_at is not None
        events = await SessionEvent.filter(session_id=w.session_id,
                                           type__in=["interrupted", "call_resumed"]).order_by("seq")
        stretches, start = [], session.recording_started_at - timedelta(seconds=1)
        for event in events:
            if event.type == "interrupted":
                stretches.append((start, event.at))
            else:
                start = event.at
        stretches.append((start, self.deps.clock() + timedelta(seconds=5)))
        for kind in ("customer_av", "agent_av", "tts"):
            for n, (a, b) in enumerate(stretches, start=1):
                stored = await self.deps.storage.put_bytes(
                    f"{w.session_id}/{kind}/{n:05d}.webm", f"placeholder {kind} {n}".encode())
                await register_recording(self.deps, Actor.system("media"), _uuid(w), NewRecording(
                    kind=kind, segment=n, path=stored.path, sha256=stored.sha256,
                    size_bytes=stored.size_bytes, duration_ms=int((b - a).total_seconds() * 1000),
                    started_at=a, ended_at=b))

    async def sign(self, w: Walk, seed: int = 0) -> Response:
        """What the customer writes for the current written step or the final signing: the
        hand-copy in the grid and/or the signature, as strokes and image (synthetic
        handwriting, tests/written.py)."""
        r = await self.request("POST", "/customer/signature", token=w.customer_token,
                               json=await written_body(w.session_id, seed))
        assert r.status == 201, r.body
        return r

    async def state(self, w: Walk) -> str:
        r = await self.as_("qa01", "GET", f"/sessions/{w.session_id}")
        assert r.status == 200, r.body
        return str(r.body["state"])


def _uuid(w: Walk) -> uuid.UUID:
    return uuid.UUID(w.session_id)


async def start_harness(config: Config) -> Harness:
    app = create_app(config)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    # Make the app's database the current Tortoise context for the test itself as well.
    activate(app[DATABASE])
    await app[REDIS].flushdb()
    return Harness(config, client)
