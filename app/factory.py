"""The aiohttp application factory: resources opened and closed in cleanup contexts, routes
grouped per feature, no module-level state (tests build as many apps as they like)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from uuid import UUID

import redis.asyncio as aioredis
from aiohttp import web
from tortoise.context import TortoiseContext

from aftercall.runtime import AfterCall, build_after_call, register_after_call_jobs
from api import (
    routes_admin,
    routes_archive,
    routes_auth,
    routes_call,
    routes_customer,
    routes_identity,
    routes_insurer,
    routes_live,
    routes_media,
    routes_qa,
    routes_scripts,
    routes_sessions,
    routes_stats,
)
from api.http import database_context, problems
from api.keys import (
    CONFIG,
    CUSTOMER_TOKENS,
    DATABASE,
    DEPS,
    IDENTITY,
    JOBS,
    LOGIN_THROTTLE,
    REDIS,
    STAFF_TOKENS,
)
from api.load_shedding import (
    ANONYMOUS_LIMITS,
    anonymous_limits,
    limit_anonymous,
    refusal_flusher,
    shed_load,
)
from api.problems import json_response
from api.registry import PREFIX, Api, openapi_document
from app.call_bridge import call_context
from bot.dialogue import DIALOGUE
from bot.passes import CHANNEL_PASSES
from bot.routes import CHANNEL_APIS
from bot.runtime import channels_context, runs_worker
from h5 import routes as h5_routes
from infra.config import Config
from infra.database import activate, deactivate, open_database
from infra.jobs import Jobs
from infra.redis_client import PoolLimits, broker_url, redis_client, use_sentinel_pool
from infra.redis_server import EmbeddedRedis
from infra.tasks import cancel_and_wait
from qa.playback import register_playback_jobs
from scripts_library.documents import (
    Folders,
    release_folders,
    share_pages,
    unshare_pages,
    use_folders,
)
from security.cpu import configure as configure_cpu_pool
from security.crypto import FieldCipher
from security.ratelimit import LoginThrottle, RateLimiter
from security.tokens import TokenStore
from storage import ObjectStore, open_store
from workflow.core import WorkflowDeps, WorkflowSettings
from workflow.events import RedisEventPublisher
from workflow.expiry import sweep
from workflow.identity import IdentityEngines
from workflow.identity_jobs import IdentityJobs
from workflow.script_speech import SpeechSettings, prerender_script_version
from workflow.speech import prepare_session_speech

log = logging.getLogger(__name__)
API_MODULES: tuple[Api, ...] = (
    routes_auth.api, routes_sessions.api, routes_customer.api, routes_media.api,
    routes_admin.api, routes_live.api, routes_scripts.api, routes_identity.api,
    routes_call.api, *CHANNEL_APIS,
    routes_qa.api, routes_archive.api, routes_insurer.api, routes_stats.api,
)
API_VERSION = "1.0.0"


STORE = web.AppKey("store", ObjectStore)


def build_store(config: Config) -> ObjectStore:
    """The evidence store (SHUANGLU_STORAGE_URL; default the data folder's `files`)."""
    return open_store(config.settings.storage_url, config.files_dir,
                      scratch=config.data_dir / "tmp")


def workflow_deps(config: Config, redis: aioredis.Redis, jobs: Jobs,
                  store: ObjectStore | None = None) -> WorkflowDeps:
    s = config.settings
    return WorkflowDeps(
        settings=WorkflowSettings(
            invitation_ttl_seconds=s.invitation_ttl_seconds,
            identity_max_attempts=s.identity_max_attempts,
            resume_window_seconds=s.resume_window_seconds,
            stale_session_seconds=s.stale_session_seconds,
            call_keepalive_timeout_seconds=s.call_keepalive_timeout_seconds,
            recording_gap_tolerance_seconds=s.recording_gap_tolerance_seconds,
            public_url=config.public_url,
            live_liveness_required=config.live_liveness_required,
            live_liveness_max_attempts=s.live_liveness_max_attempts,
            live_liveness_spot_checks=config.live_liveness_spot_checks,
            model_cache_dir=config.cache_dir,
        ),
        cipher=FieldCipher(config.field_encryption_key),
        publisher=RedisEventPublisher(redis),
        storage=store or build_store(config),
        seal_key=config.seal_signing_key,
        jobs=jobs,
    )


def speech_settings(config: Config, store: ObjectStore | None = None) -> SpeechSettings:
    """The TTS chain and cache; with `store` the cache reads through the shared store."""
    return SpeechSettings(engines=config.tts_engines, cache_dir=config.tts_cache_dir,
                          store=store)


def identity_engines_factory(config: Config | None = None) -> Callable[[], IdentityEngines]:
    """The engines load on first use (seconds), once per process, with the configuration's
    identity section (Config.identity: liveness actions, anti-spoofing weights, cache). Safe
    from any thread (the engines are warmed in one while jobs may ask on the loop)."""
    loaded: list[IdentityEngines] = []
    lock = threading.Lock()

    def get() -> IdentityEngines:
        with lock:
            if not loaded:
                from media.identity.service import IdentityService

                loaded.append(IdentityService(config.identity if config is not None else None))
            return loaded[0]

    return get


def after_call(config: Config, redis: aioredis.Redis, evidence: ObjectStore) -> AfterCall:
    """The after-call runtime (QA, archive, insurers) from the configuration's sections; built
    once per process, by the server (`AFTER_CALL`) or the worker, and handed to its jobs."""
    return build_after_call(redis, evidence, qa=config.qa, archive=config.archive,
                            insurer=config.insurer,
                            identity_max_attempts=config.settings.identity_max_attempts)


def register_jobs(
    jobs: Jobs, deps: WorkflowDeps, config: Config, redis: aioredis.Redis,
    engines: Callable[[], IdentityEngines], after_call_runtime: AfterCall,
) -> None:
    speech = speech_settings(config, deps.storage)

    async def prerender_session(session_id: str) -> int:
        return await prepare_session_speech(deps, speech, redis, UUID(session_id))

    async def prerender_script(version_id: int) -> None:
        await prerender_script_version(version_id, speech, redis)

    jobs.register("prerender_session", prerender_session)
    jobs.register("prerender_script", prerender_script)

    # The identity jobs (workflow/identity_jobs.py); the card of an attempt is read while the
    # customer records the liveness clip (issue 17).
    identity_jobs = IdentityJobs(deps, engines, redis)
    jobs.register("identity_card_read", identity_jobs.card_read)
    jobs.register("identity_check", identity_jobs.check)
    if config.settings.warm_identity_engines:
        # Loaded when this process starts receiving jobs, in the background (~9 s otherwise
        # paid by the first customer's identity check, issue 17).
        jobs.on_receive("the identity engines", lambda: engines().warm_up())
    # QA checks, queue, archive, retention and insurer webhooks (R-40..R-43).
    register_after_call_jobs(jobs, deps, after_call_runtime)
    # The playback copy of each sealed session for QA.
    register_playback_jobs(jobs, deps, redis)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    embedded: EmbeddedRedis | None = None
    url = config.redis_url
    if not url:
        embedded = EmbeddedRedis(config.data_dir / "redis")
        url = await embedded.start()
        log.info("started embedded redis-server at %s", url)
    # REDIS_URL may name a Sentinel-managed master (redis+sentinel://, infra/redis_client.py).
    # Bounded: a request waits for a free connection, then gets 503 (api/load_shedding.py).
    s = config.settings
    client = redis_client(url, PoolLimits(s.redis_max_connections, s.redis_pool_timeout_seconds,
                                          s.redis_socket_timeout_seconds))
    app[REDIS] = client
    app[JOBS] = Jobs.from_config(config, broker_url(url))
    use_sentinel_pool(app[JOBS].broker, url)
    app[STAFF_TOKENS] = TokenStore(client, "auth:staff", s.auth_token_ttl_seconds)
    app[CUSTOMER_TOKENS] = customer_tokens(config, client)
    window = s.login_failure_window_seconds
    app[LOGIN_THROTTLE] = LoginThrottle(
        per_user_ip=RateLimiter(client, "login", s.login_max_failures, window),
        per_ip=RateLimiter(client, "login-ip", s.login_max_attempts_per_ip, window),
        per_user=RateLimiter(client, "login-user", s.login_max_attempts_per_user, window))
    app[ANONYMOUS_LIMITS] = anonymous_limits(client, s.anonymous_requests_per_minute,
                                             s.anonymous_refusals_per_minute)
    try:
        yield
    finally:
        await client.aclose()
        if embedded is not None:
            embedded.stop()


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with open_database(config.database_url) as ctx:
        app[DATABASE] = ctx
        app[DEPS] = workflow_deps(config, app[REDIS], app[JOBS], app[STORE])
        app[IDENTITY] = identity_engines_factory(config)
        app[routes_qa.AFTER_CALL] = after_call(config, app[REDIS], app[DEPS].storage)
        register_jobs(app[JOBS], app[DEPS], config, app[REDIS], app[IDENTITY],
                      app[routes_qa.AFTER_CALL])
        # The receiver's tasks inherit this task's context, so the jobs see this database.
        await app[JOBS].start(run_receiver=config.settings.run_jobs_in_process)
        try:
            yield
        finally:
            await app[JOBS].stop()


def document_folders(config: Config) -> Folders:
    """The scripts' document files and the cache of their rendered pages (Config)."""
    return Folders(documents=config.documents_dir, cache=config.cache_dir)


async def _store(app: web.Application) -> AsyncIterator[None]:
    """Document pages from the configured folders, read through the evidence store while the
    app runs; the store's thread pool ends with the app."""
    folders = document_folders(app[CONFIG])
    use_folders(folders)
    share_pages(app[STORE])
    try:
        yield
    finally:
        unshare_pages(app[STORE])
        release_folders(folders)
        await app[STORE].close()


async def _worker(app: web.Application) -> AsyncIterator[None]:
    """The embedded background worker: expiry and sealing sweeps (R-30, R-31)."""
    if not app[CONFIG].settings.run_worker_in_process:
        yield
        return
    task = asyncio.create_task(
        worker_loop(app[DEPS], app[DATABASE], app[CONFIG].settings.worker_interval_seconds)
    )
    try:
        yield
    finally:
        await cancel_and_wait(task, "the embedded worker")


async def worker_loop(deps: WorkflowDeps, database: object, interval: float) -> None:
    token = activate(database)  # type: ignore[arg-type]
    try:
        while True:
            try:
                result = await sweep(deps)
                if result.expired or result.sealed:
                    log.info("sweep: expired %d, sealed %d", len(result.expired),
                             len(result.sealed))
                # Runs wherever the job receiver runs (server or `app worker`), one at a time.
                await deps.jobs.enqueue("after_call_sweep")
                for session_id in result.sealed:
                    await deps.jobs.enqueue("playback_copy", session_id=str(session_id))
                await deps.jobs.enqueue("playback_catch_up")
            except Exception:
                log.exception("background sweep failed; retrying next interval")
            await asyncio.sleep(interval)
    finally:
        deactivate(token)


def customer_tokens(config: Config, client: aioredis.Redis) -> TokenStore:
    return TokenStore(client, "auth:customer", config.settings.customer_token_ttl_seconds)


@contextlib.asynccontextmanager
async def channel_worker(config: Config, client: aioredis.Redis, deps: WorkflowDeps,
                         database: TortoiseContext) -> AsyncIterator[None]:
    """The channels of the `worker` command: their worker runs there when
    `SHUANGLU_CHANNELS_WORKER_PROCESSES=worker` (bot/runtime.runs_worker), else nothing."""
    if not runs_worker(config.channels.worker, config.settings.run_worker_in_process, "worker"):
        yield
        return
    holder = web.Application()
    holder[CONFIG] = config
    holder[REDIS] = client
    holder[DEPS] = deps
    holder[DATABASE] = database
    holder[CUSTOMER_TOKENS] = customer_tokens(config, client)
    context = channels_context(CHANNEL_PASSES, DIALOGUE.texts, process="worker")
    async with contextlib.asynccontextmanager(context)(holder):
        yield


async def _openapi(request: web.Request) -> web.Response:
    operations = [op for api in API_MODULES for op in api.operations]
    return json_response(openapi_document(operations, API_VERSION))


async def _index(request: web.Request) -> web.Response:
    return json_response({
        "name": "远程双录 remote double-recording", "api": PREFIX,
        "openapi": f"{PREFIX}/openapi.json",
    })


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[problems, shed_load, limit_anonymous, database_context],
        client_max_size=config.settings.max_body_bytes,
    )
    app[CONFIG] = config
    configure_cpu_pool(config.settings.cpu_threads, config.settings.cpu_max_waiting)
    app[STORE] = build_store(config)
    app.cleanup_ctx.extend([_store, _redis, _database, refusal_flusher(), _worker,
                            call_context(speech_settings(config, app[STORE])),
                            channels_context(CHANNEL_PASSES, DIALOGUE.texts)])
    for api in API_MODULES:
        app.router.add_routes(api.routes)
    app.router.add_get(f"{PREFIX}/openapi.json", _openapi)
    h5_routes.setup_routes(app)
    app.router.add_get("/", _index)
    return app
