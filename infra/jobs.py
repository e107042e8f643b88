"""Background jobs on a Redis stream (taskiq's RedisStreamBroker), never silently dropped.

Jobs are registered per app (closures over the app's dependencies, no module-level tasks), so
tests can run several apps in one process: taskiq keeps registered tasks per broker object. Every
process registers every job under the same stable name (`shuanglu.<job>`), so any process that
reads the stream (a server, `python -m app worker`) can run any job another one queued.

Delivery rules (`JobBroker`):

- A job is acknowledged only when its handler returned (the tasks use taskiq's manual ack and
  call `Context.ack`); the finished message is then removed from the stream and noted in the
  capped `<queue>:done` stream. The queue stream therefore holds exactly the unfinished jobs.
- A handler that raises leaves its job pending; it is delivered again (to any process) once it
  has been idle for `redeliver_after_seconds`. A job a process does not know (a newer release
  queued it) is left pending the same way, for a process that knows it. A process that dies
  mid-job leaves it pending too.
- A running job renews its claim every quarter of `redeliver_after_seconds` (XCLAIM JUSTID, which
  resets the idle time without counting a delivery), so a long job (a playback copy takes minutes)
  is never taken over while its process is alive, and a dead process's jobs are re-claimed within
  about `redeliver_after_seconds`.
- The stream's own delivery count (XPENDING) bounds the attempts: a job that failed or stayed
  unknown on its `max_deliveries`-th delivery, or comes round again after that many, is moved to
  the dead-letter stream `<queue>:dead` with the reason, logged as an error, then acknowledged.

Every job is idempotent: the periodic sweeps re-queue work that was left unfinished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from taskiq import Context, TaskiqDepends
from taskiq.abc.broker import AckableMessage
from taskiq.acks import AcknowledgeType
from taskiq.api import run_receiver_task
from taskiq.message import TaskiqMessage
from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

from infra.tasks import cancel_and_wait

if TYPE_CHECKING:
    from infra.config import Config

log = logging.getLogger(__name__)
JobHandler = Callable[..., Awaitable[Any]]

NAMESPACE = "shuanglu"
DEFAULT_REDELIVER_AFTER_SECONDS = 60.0
DEFAULT_MAX_DELIVERIES = 5
DONE_MAXLEN = 1000  # the done stream is a recent history for operators, not a record
DEAD_MAXLEN = 10000
CLAIM_BATCH = 10

# Acknowledge and delete the message, then record it as dead; nothing if it was acked already
# (another process finished a duplicate delivery in the meantime).
# KEYS: queue, dead stream; ARGV: group, message id, dead maxlen, field/value pairs.
_DEAD_LETTER = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
return 1
"""


def task_name(job: str) -> str:
    """The taskiq task name of a job: the same in every process."""
    return f"{NAMESPACE}.{job}"


def queue_name(profile: str) -> str:
    return f"shuanglu-{profile}-jobs"


@dataclass
class Delivery:
    """One delivery of a stream message to this process."""

    msg_id: str
    data: bytes
    deliveries: int  # the stream's delivery count, this delivery included
    task_name: str = "?"
    task_id: str = "?"


class JobMessage(AckableMessage):
    """A delivered stream message, with its stream id."""

    msg_id: str


class JobBroker(RedisStreamBroker):
    """taskiq's stream broker with the delivery rules of this module (see its docstring).

    `listen` replaces the upstream one, which only looks for idle messages right after reading
    new ones (an idle queue never re-claimed anything), hands over messages it cannot run, and
    does not recreate a consumer group that a Redis flush or restart removed."""

    def __init__(self, url: str, queue: str, *, redeliver_after_seconds: float,
                 max_deliveries: int) -> None:
        # consumer_id "0": a group created after jobs were queued (a fresh or restarted Redis)
        # still delivers them ("$" would skip everything queued before it existed).
        super().__init__(url, queue_name=queue, consumer_group_name=queue, consumer_id="0",
                         idle_timeout=max(1, round(redeliver_after_seconds * 1000)),
                         xread_count=1, unacknowledged_batch_size=CLAIM_BATCH)
        self.dead_stream = f"{queue}:dead"
        self.done_stream = f"{queue}:done"
        self.max_deliveries = max(1, max_deliveries)
        # Messages this process holds (fetched, waiting or running), by stream id: their
        # claim is renewed. Running ones by task id too, for the failure path.
        self._held: dict[str, Delivery] = {}
        self._running: dict[str, Delivery] = {}
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    # -- the consumer group -------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Creates the consumer group (and the stream) unless it exists."""
        async with Redis(connection_pool=self.connection_pool) as redis:
            try:
                await redis.xgroup_create(self.queue_name, self.consumer_group_name,
                                          id=self.consumer_id, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _declare_consumer_group(self) -> None:
        await self.ensure_group()

    # -- receiving ------------------------------------------------------------------------------

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        renewer = asyncio.create_task(self._renew_claims())
        waiting: list[Delivery] = []
        fetch: asyncio.Task[list[Delivery]] | None = None
        need_group = True  # whenever a receiver starts, and after Redis lost it
        try:
            async with Redis(connection_pool=self.connection_pool) as redis:
                while True:
                    try:
                        if need_group:
                            await self.ensure_group()
                            need_group = False
                        # Shielded: a stop must not cancel redis-py mid-read (redis 8 can
                        # swallow that cancellation and never return); the read ends within
                        # its block time on its own, and what it fetched but never handed
                        # over goes idle and is claimed again.
                        fetch = asyncio.create_task(self._fetch(redis))
                        waiting = await asyncio.shield(fetch)
                    except ResponseError as exc:
                        if "NOGROUP" not in str(exc):
                            raise
                        log.warning("job consumer group %s is gone (Redis flushed or "
                                    "restarted); recreating it", self.consumer_group_name)
                        need_group = True
                        continue
                    except RedisConnectionError as exc:
                        log.warning("job queue unreachable (%s); retrying in 1 s", exc)
                        await asyncio.sleep(1.0)
                        continue
                    while waiting:
                        delivery = waiting.pop(0)
                        message = await self._admit(delivery)
                        if message is not None:
                            yield message
        finally:
            for delivery in waiting:  # fetched, never handed over: let them go idle
                self._held.pop(delivery.msg_id, None)
            if fetch is not None and not fetch.done():
                # The shielded read outlives the receiver; it ends within its block time (or
                # fails when the broker closes its connections): settle it then.
                fetch.add_done_callback(self._abandoned_fetch)
            renewer.cancel()
            await asyncio.wait({renewer}, timeout=1.0)  # never swallows our own cancellation

    def _abandoned_fetch(self, fetch: asyncio.Task[list[Delivery]]) -> None:
        """A read still running when the receiver stopped: what it fetched is never handed
        over (it goes idle and is claimed again), and its error is expected, not logged as
        "never retrieved"."""
        if fetch.cancelled():
            return
        if (error := fetch.exception()) is not None:
            log.debug("job read ended after the receiver stopped: %r", error)
            return
        for delivery in fetch.result():
            self._held.pop(delivery.msg_id, None)

    async def _fetch(self, redis: Redis) -> list[Delivery]:
        claimed: list[Delivery] = []
        now = asyncio.get_running_loop().time()
        if now >= self._next_claim:
            claimed = await self._claim_idle(redis)
            # Again at once while there is a backlog of idle messages, else within a second.
            more = len(claimed) >= CLAIM_BATCH or self._claim_cursor != "0-0"
            self._next_claim = now if more else now + min(1.0, self.idle_timeout / 4000)
        fetched: Any = await redis.xreadgroup(
            self.consumer_group_name, self.consumer_name, {self.queue_name: ">"},
            count=self.count, block=None if claimed else self.block,
        )
        new = [Delivery(_text(msg_id), fields[b"data"], 1)
               for _stream, entries in fetched or [] for msg_id, fields in entries]
        batch = claimed + new
        for delivery in batch:
            self._held[delivery.msg_id] = delivery
        return batch

    async def _claim_idle(self, redis: Redis) -> list[Delivery]:
        """Takes over messages idle longer than the redelivery time (their process died, their
        handler failed, or it did not know them); XAUTOCLAIM counts a delivery for each."""
        result = await redis.xautoclaim(
            self.queue_name, self.consumer_group_name, self.consumer_name,
            min_idle_time=self.idle_timeout, start_id=self._claim_cursor,
            count=self.unacknowledged_batch_size,
        )
        self._claim_cursor = _text(result[0])
        # Entries trimmed from the stream come back empty (Redis 6.2) or apart (7): no data.
        entries = [(_text(msg_id), fields) for msg_id, fields in result[1]
                   if msg_id is not None and fields]
        held = [(msg_id, fields) for msg_id, fields in entries if msg_id not in self._held]
        if not held:
            return []
        pipe = redis.pipeline(transaction=False)
        for msg_id, _fields in held:
            pipe.xpending_range(self.queue_name, self.consumer_group_name, min=msg_id,
                                max=msg_id, count=1)
        counts = await pipe.execute()
        claimed = []
        for (msg_id, fields), pending in zip(held, counts, strict=True):
            if pending:  # else acknowledged meanwhile
                claimed.append(Delivery(msg_id, fields[b"data"],
                                        int(pending[0]["times_delivered"])))
        return claimed

    async def _admit(self, delivery: Delivery) -> AckableMessage | None:
        """The message to hand to the receiver, or None when it stays pending or is dead."""
        try:
            message = self.formatter.loads(delivery.data)
        except Exception as exc:
            await self._dead_letter(delivery, "unreadable", f"{type(exc).__name__}: {exc}")
            return None
        delivery.task_name, delivery.task_id = message.task_name, message.task_id
        of = f"delivery {delivery.deliveries} of {self.max_deliveries}"
        if self.find_task(message.task_name) is None:
            if delivery.deliveries >= self.max_deliveries:
                await self._dead_letter(delivery, "unknown_task",
                                        f"no process that took it knows {message.task_name}")
            else:
                # Not acknowledged: a process that knows it claims it once it is idle.
                self._held.pop(delivery.msg_id, None)
                log.warning("job %s (%s) is unknown here (%s); left for a process that knows "
                            "it", message.task_name, message.task_id, of)
            return None
        if delivery.deliveries > self.max_deliveries:
            await self._dead_letter(
                delivery, "gave_up",
                f"not finished after {delivery.deliveries - 1} deliveries (its process stopped "
                "or it never reached its handler)")
            return None
        self._running[message.task_id] = delivery
        return JobMessage(data=delivery.data, ack=lambda: self._finish(delivery),
                          msg_id=delivery.msg_id)

    async def _finish(self, delivery: Delivery) -> None:
        """The handler returned: acknowledge, drop it from the stream, note it as done."""
        self._release(delivery)
        async with Redis(connection_pool=self.connection_pool) as redis:
            pipe = redis.pipeline(transaction=True)
            pipe.xack(self.queue_name, self.consumer_group_name, delivery.msg_id)
            pipe.xdel(self.queue_name, delivery.msg_id)
            pipe.xadd(self.done_stream, {
                "task": delivery.task_name, "task_id": delivery.task_id, "id": delivery.msg_id,
                "deliveries": delivery.deliveries, "consumer": self.consumer_name,
            }, maxlen=DONE_MAXLEN, approximate=True)
            await pipe.execute()

    async def job_failed(self, message: TaskiqMessage, exc: BaseException,
                         kwargs: dict[str, Any]) -> None:
        """The handler raised: retried later (left pending), or dead on its last delivery."""
        delivery = self._running.get(message.task_id)
        if delivery is None:
            log.error("job %s failed with %s", message.task_name, kwargs, exc_info=exc)
            return
        self._release(delivery)  # stop renewing: it goes idle and is delivered again
        last = delivery.deliveries >= self.max_deliveries
        log.error("job %s (%s) failed with %s on delivery %d of %d; %s", delivery.task_name,
                  delivery.task_id, kwargs, delivery.deliveries, self.max_deliveries,
                  "giving up" if last else
                  f"delivered again in about {self.idle_timeout / 1000:.0f} s", exc_info=exc)
        if last:
            await self._dead_letter(delivery, "failed", f"{type(exc).__name__}: {exc}")

    def settle(self, message: AckableMessage) -> None:
        """The receiver is done with a message: whatever happened (done, failed, cancelled,
        refused by taskiq before the handler ran), stop renewing its claim, so an unfinished
        one is delivered again once idle."""
        delivery = self._held.get(message.msg_id) if isinstance(message, JobMessage) else None
        if delivery is not None:
            self._release(delivery)

    def _release(self, delivery: Delivery) -> None:
        self._held.pop(delivery.msg_id, None)
        if self._running.get(delivery.task_id) is delivery:
            del self._running[delivery.task_id]

    async def _dead_letter(self, delivery: Delivery, reason: str, detail: str) -> None:
        self._release(delivery)
        fields: dict[str, str | bytes] = {
            "reason": reason, "detail": detail[:2000], "task": delivery.task_name,
            "task_id": delivery.task_id, "id": delivery.msg_id,
            "deliveries": str(delivery.deliveries), "consumer": self.consumer_name,
            "at": datetime.now(UTC).isoformat(), "data": delivery.data,
        }
        args: list[str | bytes | int] = [self.consumer_group_name, delivery.msg_id, DEAD_MAXLEN]
        for key, value in fields.items():
            args += [key, value]
        async with Redis(connection_pool=self.connection_pool) as redis:
            moved = await redis.eval(_DEAD_LETTER, 2, self.queue_name, self.dead_stream, *args)
        if moved:
            log.error("job %s (%s) moved to the dead-letter stream %s after %d deliveries: "
                      "%s: %s", delivery.task_name, delivery.task_id, self.dead_stream,
                      delivery.deliveries, reason, detail)

    async def _renew_claims(self) -> None:
        """Resets the idle time of every message this process holds, so none is taken over
        while this process is alive; JUSTID does not count a delivery."""
        interval = self.idle_timeout / 4000
        async with Redis(connection_pool=self.connection_pool) as redis:
            while True:
                await asyncio.sleep(interval)
                ids: list[Any] = list(self._held)
                if not ids:
                    continue
                try:
                    await asyncio.shield(redis.xclaim(
                        self.queue_name, self.consumer_group_name, self.consumer_name, 0,
                        ids, justid=True))  # not cancelled mid-read (see listen)
                except RedisError as exc:
                    log.warning("could not renew the claim on %d jobs: %s", len(ids), exc)


class JobReceiver(Receiver):
    """taskiq's receiver, telling the broker when it is done with each message (see
    `JobBroker.settle`)."""

    broker: JobBroker

    async def callback(self, message: bytes | AckableMessage, raise_err: bool = False) -> None:
        try:
            await super().callback(message, raise_err)
        finally:
            if isinstance(message, AckableMessage):
                self.broker.settle(message)


async def _warm(name: str, load: Callable[[], None]) -> None:
    started = asyncio.get_running_loop().time()
    try:
        await asyncio.to_thread(load)
    except Exception:
        # Not fatal: the first job that needs it loads it (and fails there, visibly).
        log.exception("loading %s before the first job failed", name)
        return
    log.info("%s loaded before the first job (%.1f s)", name,
             asyncio.get_running_loop().time() - started)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Jobs:
    def __init__(self, redis_url: str, queue_name: str, *,
                 redeliver_after_seconds: float = DEFAULT_REDELIVER_AFTER_SECONDS,
                 max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.broker = JobBroker(redis_url, queue_name,
                                redeliver_after_seconds=redeliver_after_seconds,
                                max_deliveries=max_deliveries)
        self._receiver: asyncio.Task[None] | None = None
        # What this process loads when it starts receiving jobs (`on_receive`), and the
        # background tasks loading it once the receiver has started.
        self._on_receive: list[tuple[str, Callable[[], None]]] = []
        self.warming: list[asyncio.Task[None]] = []

    @classmethod
    def from_config(cls, config: Config, redis_url: str) -> Jobs:
        s = config.settings
        return cls(redis_url, queue_name(config.profile),
                   redeliver_after_seconds=s.jobs_redeliver_after_seconds,
                   max_deliveries=s.jobs_max_deliveries)

    def register(self, name: str, handler: JobHandler) -> None:
        broker = self.broker

        async def run(context: Annotated[Context, TaskiqDepends()], **kwargs: Any) -> Any:
            try:
                result = await handler(**kwargs)
            except Exception as exc:
                # Left pending for a retry, or dead-lettered on its last delivery.
                await broker.job_failed(context.message, exc, kwargs)
                raise
            await context.ack()
            return result

        # Manual ack: taskiq's receiver acknowledges nothing itself, `run` does on success.
        self.broker.register_task(run, task_name=task_name(name),
                                  ack_type=AcknowledgeType.MANUAL.value)

    async def enqueue(self, name: str, **kwargs: Any) -> None:
        await self.submit(name, **kwargs)

    async def submit(self, name: str, **kwargs: Any) -> str:
        """Queues a job; returns its task id (the `task_id` of its done or dead entry)."""
        task = self.broker.find_task(task_name(name))
        if task is None:
            raise KeyError(f"unknown job {name}")
        return (await task.kiq(**kwargs)).task_id

    def on_receive(self, name: str, load: Callable[[], None]) -> None:
        """`load` (blocking: models from disk) runs in a thread when this process starts
        receiving jobs, in the background: the receiver and the process's readiness do not
        wait for it. Only processes that run jobs pay for it (the server with
        run_jobs_in_process, `app worker`); a job that comes first loads what it needs itself."""
        self._on_receive.append((name, load))

    def _start_warming(self) -> None:
        if self.warming or not self._on_receive:
            return  # once per process, however often the receiver is started
        for name, load in self._on_receive:
            self.warming.append(asyncio.create_task(_warm(name, load), name=f"warm {name}"))

    async def receive(self, max_async_tasks: int = 4) -> None:
        """Runs the receiver until cancelled (the group is created when it starts); what
        `on_receive` named starts loading in the background."""
        self._start_warming()
        await run_receiver_task(self.broker, receiver_cls=JobReceiver,
                                max_async_tasks=max_async_tasks, run_startup=False)

    async def start(self, run_receiver: bool) -> None:
        await self.broker.startup()  # creates the consumer group as well
        if run_receiver:
            self._receiver = asyncio.create_task(self.receive())

    async def stop(self) -> None:
        """Stops the receiver, then the broker. A cancellation that reaches the receiver while
        redis-py is reading a reply can be swallowed there (the receiver then reads on): it is
        cancelled again until it ends, for at most 10 s, and waited for with `asyncio.wait`,
        which never swallows a cancellation of the caller's own."""
        task, self._receiver = self._receiver, None
        if task is not None:
            await cancel_and_wait(task, "the job receiver")
        await self.broker.shutdown()
