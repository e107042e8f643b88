"""Command line: `python -m app serve | worker | migrate | create-user | verify-audit |
seed-demo | verify | seal-keys | export | verify-archive | rehearse`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Callable, Coroutine
from datetime import date
from typing import Any

from aiohttp import web

from app.factory import (
    after_call,
    channel_worker,
    create_app,
    document_folders,
    identity_engines_factory,
    register_jobs,
    worker_loop,
    workflow_deps,
)
from infra.config import Config, ConfigurationError, load_config
from infra.database import migrate, open_database
from infra.jobs import Jobs
from infra.redis_server import EmbeddedRedis
from scripts_library.documents import use_folders
from security.masking import MaskingFilter

DESCRIPTION = """远程双录 — remote double-recording of insurance sales.

Configuration comes from SHUANGLU_* environment variables or a .env file
(SHUANGLU_PROFILE=dev|test|prod, DATABASE_URL, REDIS_URL, ...); see README.md."""

# Exit codes of `verify` and `verify-archive`: one per verdict, so a script can tell an
# incomplete session, or one not sealed yet, from an altered one.
EXIT_INTACT = 0
EXIT_ALTERED = 1
EXIT_USAGE = 2  # bad arguments, no such session, not an archive
EXIT_INCOMPLETE = 3  # sealed as incomplete (and intact), or sealing refused: evidence missing
EXIT_NOT_SEALED = 4  # not sealed yet (verify only)
EXIT_CODES_HELP = (f"Exit codes: {EXIT_INTACT} intact, {EXIT_ALTERED} altered, {EXIT_USAGE} "
                   f"usage error, {EXIT_INCOMPLETE} incomplete (sealed intact but incomplete, "
                   f"or sealing refused because evidence is missing)")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # ID and phone numbers are masked in every log line, whatever logged them.
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _serve(config: Config, args: argparse.Namespace) -> int:
    if args.port:
        config = load_config(config.settings.model_copy(update={"port": args.port}))
    app = create_app(config)
    s = config.settings
    print(f"远程双录 listening on {config.public_url}  (API {config.public_url}/api/v1, "
          f"OpenAPI {config.public_url}/api/v1/openapi.json)", flush=True)
    web.run_app(app, host=s.host, port=s.port, print=None, access_log=None)
    return 0


async def _worker(config: Config, args: argparse.Namespace) -> int:
    """A stand-alone worker: the same sweeps and job receiver the server runs in-process by
    default. Any number of workers and servers may read the one job queue: every process knows
    every job by the same name, and a job is acknowledged only once it is done (infra/jobs.py)."""
    from infra.redis_client import broker_url, redis_client, use_sentinel_pool

    embedded = None
    url = config.redis_url
    if not url:
        # The server's embedded Redis on this data folder (same machine): the one job queue.
        # A worker with a private Redis would never see a job a server queued.
        url = EmbeddedRedis(config.data_dir / "redis").running_url() or ""
        if url:
            logging.getLogger(__name__).info("using the server's embedded Redis at %s", url)
        elif args.once:  # the sweep alone needs no queue: a private Redis for its locks
            embedded = EmbeddedRedis(config.data_dir / "redis-worker")
            url = await embedded.start()
        else:
            print("REDIS_URL is not set and no server runs on this data folder "
                  f"({config.data_dir}): start the server first, or set REDIS_URL to the "
                  "server's Redis", file=sys.stderr)
            return 2
    # REDIS_URL may name a Sentinel-managed master (redis+sentinel://, infra/redis_client.py).
    client = redis_client(url)
    jobs = Jobs.from_config(config, broker_url(url))
    use_sentinel_pool(jobs.broker, url)
    try:
        async with open_database(config.database_url) as ctx:
            deps = workflow_deps(config, client, jobs)
            register_jobs(jobs, deps, config, client, identity_engines_factory(config),
                          after_call(config, client, deps.storage))
            if args.once:
                from workflow.expiry import sweep

                await jobs.start(run_receiver=False)
                result = await sweep(deps)
                print(f"expired {len(result.expired)}, sealed {len(result.sealed)}, sealed "
                      f"incomplete {len(result.sealed_incomplete)}, refused (evidence "
                      f"incomplete) {len(result.refused)}")
                return 0
            # The job receiver and the periodic sweeps, in this one process.
            await jobs.start(run_receiver=True)
            async with channel_worker(config, client, deps, ctx):
                await worker_loop(deps, ctx, config.settings.worker_interval_seconds)
    finally:
        await jobs.stop()
        await client.aclose()
        if embedded is not None:
            embedded.stop()
    return 0


async def _migrate(config: Config, args: argparse.Namespace) -> int:
    def progress(event: str, app_label: str, name: str) -> None:
        if event.endswith("_done"):
            print(f"  {event.removesuffix('_done')}: {app_label}.{name}")

    target = None
    if args.rollback_all:
        target = "models.__first__"
    elif args.to:
        target = f"models.{args.to}"
    config.data_dir.mkdir(parents=True, exist_ok=True)
    await migrate(config.database_url, target, progress)
    print("database is up to date" if target is None else f"database migrated to {target}")
    return 0


async def _seed(config: Config, args: argparse.Namespace) -> int:
    if config.profile == "prod":
        print("seed-demo refuses to run with the prod profile", file=sys.stderr)
        return 2
    from app.seed import seed_demo

    async with open_database(config.database_url):
        summary = await seed_demo()
    print(f"demo data ready (products {', '.join(summary.product_codes)}); demo logins:")
    for username, password, role in summary.users:
        print(f"  {role:<14} {username:<10} {password}")
    return 0


async def _create_user(config: Config, args: argparse.Namespace) -> int:
    from tortoise.transactions import in_transaction

    from models.org import Institution
    from models.people import Agent, Role, User
    from security import audit
    from security.audit import Actor
    from security.passwords import WeakPasswordError, hash_password

    password = args.password or getpass.getpass("password: ")
    async with open_database(config.database_url):
        institution = await Institution.get_or_none(code=args.institution)
        if institution is None:
            print(f"no institution with code {args.institution}", file=sys.stderr)
            return 2
        if await User.exists(username=args.username):
            print(f"user {args.username} exists", file=sys.stderr)
            return 2
        try:
            password_hash = hash_password(password)
        except WeakPasswordError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        role = Role(args.role)
        if role == Role.AGENT and not (args.licence_no and args.branch_id
                                       and args.licence_expires and args.training_expires):
            print("an agent needs --licence-no, --licence-expires, --training-expires and "
                  "--branch-id", file=sys.stderr)
            return 2
        async with in_transaction() as conn:
            user = await User.create(
                username=args.username, password_hash=password_hash,
                display_name=args.display_name or args.username, role=role,
                institution_id=institution.id, branch_id=args.branch_id, using_db=conn,
            )
            if role == Role.AGENT:
                await Agent.create(
                    user_id=user.id, licence_no=args.licence_no,
                    licence_expires=date.fromisoformat(args.licence_expires),
                    training_expires=date.fromisoformat(args.training_expires),
                    grade=args.grade, using_db=conn,
                )
            await audit.record(conn, Actor.system("cli"), "user.create", object_type="user",
                               object_id=str(user.id), details={"role": role.value})
    print(f"created {role.value} {args.username} (id {user.id})")
    return 0


async def _verify_audit(config: Config, args: argparse.Namespace) -> int:
    from security.audit import verify_chain

    async with open_database(config.database_url):
        result = await verify_chain()
    if result.ok:
        print(f"audit chain intact: {result.checked} entries verified")
        return 0
    where = f"entry {result.first_broken_id}" if result.first_broken_id else "end of chain"
    print(f"audit chain BROKEN at {where}: {result.reason} {result.details}")
    print(f"({result.checked} entries before it verified)")
    return 1


async def _verify_session(config: Config, args: argparse.Namespace) -> int:
    """Checks a session against its signed manifest without the server (R-31): intact,
    incomplete, altered, or not sealed yet, each with its own exit code."""
    from uuid import UUID

    import redis.asyncio as aioredis

    from security.seal_manifest import VerifyStatus
    from workflow.sealing import verify_session

    try:
        session_id = UUID(args.session_id)
    except ValueError:
        print(f"not a session id: {args.session_id}", file=sys.stderr)
        return EXIT_USAGE
    async with open_database(config.database_url):
        # verify reads the database and the files only; the publisher is never used.
        deps = workflow_deps(config, aioredis.Redis(), Jobs("redis://127.0.0.1:1", "unused"))
        from models.sessions import RecordingSession

        if not await RecordingSession.exists(id=session_id):
            print(f"no session {session_id}", file=sys.stderr)
            return EXIT_USAGE
        result = await verify_session(deps, session_id)
    what = f"session {session_id} (state {result.state.value})"
    if result.status == VerifyStatus.INTACT:
        print(f"{what}: INTACT (manifest signature, chain and every file verified)")
        return EXIT_INTACT
    if result.status == VerifyStatus.NOT_SEALED:
        print(f"{what}: NOT SEALED yet")
        for note in result.notes:
            print(f"  {note}")
        return EXIT_NOT_SEALED
    if result.status == VerifyStatus.ALTERED:
        print(f"{what}: ALTERED")
        for problem in result.altered:
            print(f"  - {problem}")
    elif result.complete is None:
        print(f"{what}: INCOMPLETE (not sealed: evidence is missing)")
    else:
        print(f"{what}: INCOMPLETE (sealed as incomplete; signature, chain and every sealed "
              f"item verified)")
    for gap in result.incomplete:
        print(f"  - incomplete: {gap}")
    return EXIT_ALTERED if result.status == VerifyStatus.ALTERED else EXIT_INCOMPLETE


async def _seal_keys(config: Config, args: argparse.Namespace) -> int:
    """Lists an institution's seal keys (public halves only) or rotates its active key."""
    from tortoise.transactions import in_transaction

    from models.org import Institution
    from security.audit import Actor
    from security.crypto import FieldCipher
    from security.seal_keys import DatabaseKeyring, published_keyring

    async with open_database(config.database_url):
        if args.code:
            institution = await Institution.get_or_none(code=args.code)
            if institution is None:
                print(f"no institution with code {args.code}", file=sys.stderr)
                return 2
            institutions = [institution]
        elif args.action == "rotate":
            print("rotate needs an institution code", file=sys.stderr)
            return 2
        else:
            institutions = await Institution.all().order_by("code")
        if args.action == "rotate":
            keyring = DatabaseKeyring(FieldCipher(config.field_encryption_key))
            async with in_transaction() as conn:
                key = await keyring.rotate(conn, institutions[0].id, Actor.system("cli"))
            print(f"{institutions[0].code}: new active key {key.key_id} {key.public_key}")
        for institution in institutions:
            document = await published_keyring(institution)
            print(f"{institution.code} ({institution.name})")
            if not document["keys"]:
                print("  (no key yet: one is created when its first session is sealed)")
            for key in document["keys"]:
                retired = f", retired {key['retired_at']}" if key["retired_at"] else ""
                print(f"  {key['key_id']}  {key['status']:<7}  {key['public_key']}  "
                      f"created {key['created_at']}{retired}")
    return 0


async def _export(config: Config, args: argparse.Namespace) -> int:
    """Writes a sealed session as a self-contained archive, then verifies what it wrote."""
    from pathlib import Path
    from uuid import UUID

    import redis.asyncio as aioredis

    from archive.export import NotSealed, plan_export, write_archive
    from archive.offline import verify_archive
    from security import audit
    from security.audit import Actor
    from workflow.core import utcnow

    try:
        session_id = UUID(args.session_id)
    except ValueError:
        print(f"not a session id: {args.session_id}", file=sys.stderr)
        return 2
    dest = Path(args.dest)
    async with open_database(config.database_url):
        deps = workflow_deps(config, aioredis.Redis(), Jobs("redis://127.0.0.1:1", "unused"))
        try:
            plan = await plan_export(deps, session_id, utcnow())
        except NotSealed as exc:
            print(str(exc), file=sys.stderr)
            return 2
        try:
            await asyncio.to_thread(write_archive, plan, dest)
        except FileExistsError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        # An export copies recordings: it is an access to personal data.
        await audit.record_alone(Actor.system("cli"), "archive.export", object_type="session",
                                 object_id=str(session_id),
                                 details={"files": len(plan.members), "to": "file"})
    report = await asyncio.to_thread(verify_archive, dest)
    print(f"exported session {session_id} to {dest} ({len(plan.members)} files)")
    if report.problems:
        print("WARNING: the sealed evidence no longer matches its manifest:")
        for problem in report.problems:
            print(f"  - {problem}")
        return 1
    for gap in report.incomplete:
        print(f"note: sealed as incomplete: {gap}")
    print("the archive verifies against its manifest; check it offline with "
          f"python -m app verify-archive {dest} --keyring <published keys>")
    return 0


def _verify_archive(args: argparse.Namespace) -> int:
    """Offline: no configuration, database, server or secret is read (R-31)."""
    import json
    from pathlib import Path

    from archive.offline import ArchiveError, load_keyring_file, verify_archive
    from security.seal_manifest import TrustedKey, VerifyStatus

    trusted: list[TrustedKey] | None = None
    try:
        if args.public_key:
            trusted = [TrustedKey(public_key=args.public_key.strip())]
        elif args.keyring:
            trusted = load_keyring_file(Path(args.keyring))
        report = verify_archive(Path(args.path), trusted)
    except (ArchiveError, OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    what = f"session {report.session_id or '?'}"
    if report.version and report.version >= 2:
        what += f", institution {report.institution}, key {report.key_id}"
    elif report.version == 1:
        what += ", manifest version 1 (platform key)"
    checked = f"signature, chain and {report.items_checked} items verified"
    if report.status == VerifyStatus.INTACT:
        print(f"{what}: INTACT ({checked})")
    elif report.status == VerifyStatus.INCOMPLETE:
        print(f"{what}: INTACT BUT INCOMPLETE ({checked})")
    else:
        print(f"{what}: ALTERED")
        for problem in report.problems:
            print(f"  - {problem}")
    for gap in report.incomplete:
        print(f"  - incomplete: {gap}")
    for note in report.notes:
        print(f"note: {note}")
    return {VerifyStatus.INTACT: EXIT_INTACT, VerifyStatus.INCOMPLETE: EXIT_INCOMPLETE}.get(
        report.status, EXIT_ALTERED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the HTTP server (and the in-process worker)",
                           description="Run the API server on SHUANGLU_HOST:SHUANGLU_PORT. "
                           "Without REDIS_URL it starts its own redis-server child.")
    serve.add_argument("--port", type=int, help="override SHUANGLU_PORT")
    worker = sub.add_parser("worker", help="run background sweeps and jobs",
                            description="Expire stale sessions and lapsed interruptions, seal "
                            "completed sessions, and run the background jobs (speech, identity "
                            "checks, QA checks, playback copies) queued in REDIS_URL. Set "
                            "SHUANGLU_RUN_WORKER_IN_PROCESS=false (sweeps) and, to keep jobs off "
                            "the servers, SHUANGLU_RUN_JOBS_IN_PROCESS=false on the servers when "
                            "running workers separately.")
    worker.add_argument("--once", action="store_true", help="run one sweep and exit")
    mig = sub.add_parser("migrate", help="apply (or roll back) database migrations (R-53)",
                         description="Without options, apply all migrations.")
    group = mig.add_mutually_exclusive_group()
    group.add_argument("--to", help="migrate forwards or backwards to this migration name")
    group.add_argument("--rollback-all", action="store_true", help="roll back every migration")
    user = sub.add_parser("create-user", help="create a staff user with one role",
                          description="Create a staff user. Roles: agent, product_owner, "
                          "qa_inspector, supervisor, admin, auditor, system.")
    user.add_argument("username")
    user.add_argument("--role", required=True)
    user.add_argument("--institution", required=True, help="institution code")
    user.add_argument("--display-name")
    user.add_argument("--password", help="prompted for when omitted")
    user.add_argument("--branch-id", type=int)
    user.add_argument("--licence-no")
    user.add_argument("--licence-expires", help="YYYY-MM-DD (agents)")
    user.add_argument("--training-expires", help="YYYY-MM-DD (agents)")
    user.add_argument("--grade", type=int, default=1)
    sub.add_parser("verify-audit", help="verify the audit log hash chain (R-51)",
                   description="Recompute every audit entry hash; report the first broken entry "
                   "and exit 1 when the chain is broken.")
    verify = sub.add_parser("verify", help="verify a sealed session against its manifest (R-31)",
                            description="Recompute the hash of every recorded segment, the "
                            "signature and the timeline of a sealed session, check the Ed25519 "
                            "signature of its manifest, and say whether it is intact, "
                            "incomplete (what is missing and why), altered (what) or not "
                            f"sealed yet (its state). {EXIT_CODES_HELP}, {EXIT_NOT_SEALED} "
                            "not sealed yet.")
    verify.add_argument("session_id")
    keys = sub.add_parser("seal-keys", help="list or rotate an institution's seal keys (R-31)",
                          description="list: the public keys of one (or every) institution. "
                          "rotate: retire the active key (older manifests still verify with "
                          "it) and create a new one. Both are audited; private keys are never "
                          "printed.")
    keys.add_argument("action", choices=("list", "rotate"))
    keys.add_argument("code", nargs="?", help="institution code (required for rotate)")
    export = sub.add_parser("export", help="export a sealed session as a verifiable archive",
                            description="Write the manifest, timeline, acknowledgements, "
                            "signature images, recording segments, the institution's public "
                            "keys and a README to DEST (a folder, or a .zip when DEST ends in "
                            ".zip). Contains personal data (recordings): audited.")
    export.add_argument("session_id")
    export.add_argument("dest")
    offline = sub.add_parser("verify-archive",
                             help="verify an exported archive offline (no database, R-31)",
                             description="Check the manifest signature, the chain and every "
                             "file of an exported archive; name what was altered, missing or "
                             "added, and what an incomplete (aborted or expired) session lacks. "
                             "Without --public-key/--keyring the key embedded in the archive is "
                             f"used, which is only self-asserted. {EXIT_CODES_HELP}.")
    offline.add_argument("path", help="the archive folder or .zip")
    trust = offline.add_mutually_exclusive_group()
    trust.add_argument("--public-key", metavar="KEY_B64",
                       help="the trusted Ed25519 public key (base64)")
    trust.add_argument("--keyring", metavar="FILE", help="a keyring JSON as published at "
                       "/api/v1/institutions/{code}/seal-keys")
    sub.add_parser("seed-demo", help="create demo institution, users, premises and product",
                   description="Idempotent demo data for a local trial; refused in prod.")
    from rehearsal import cli as rehearsal_cli

    rehearse = sub.add_parser("rehearse", help="play a session's customer and agent with real "
                              "media against a running server",
                              description=rehearsal_cli.DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    rehearsal_cli.add_arguments(rehearse)
    return parser


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "worker": _worker, "migrate": _migrate, "create-user": _create_user,
    "verify-audit": _verify_audit, "seed-demo": _seed, "verify": _verify_session,
    "seal-keys": _seal_keys, "export": _export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "verify-archive":
        # Offline by design: no profile, secrets or database are loaded.
        return _verify_archive(args)
    if args.command == "rehearse":
        # A client of a running server (HTTP and WebRTC only): no configuration is loaded.
        from rehearsal.cli import main as rehearse_main

        return rehearse_main(args)
    try:
        config = load_config()
    except (ConfigurationError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.settings.log_level)
    # The scripts' document files and the rendered pages' cache of this process.
    use_folders(document_folders(config))
    if args.command == "serve":
        return _serve(config, args)
    return asyncio.run(COMMANDS[args.command](config, args))
