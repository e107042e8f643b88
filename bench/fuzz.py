"""The large schemathesis campaign of issue 14: generated requests against the whole API of a
real server process, as every kind of caller, until at least `--cases` cases ran.

    python -m bench.fuzz [--cases 50000] [--database sqlite|postgres] [--seed 1]

The suite runs a bounded, derandomized pass of the same fuzzer (tests/foundation/test_api_fuzz.py,
about 2,000 cases); this runs rounds of it with a new seed each round against one server process
(its own redis-server, a scratch database) until the case count is reached, then prints the
cases, the statuses, the 5xx count and every distinct failed check (status code, media type or
body not as the OpenAPI document declares). The anonymous and login limits are raised for the
run (every generated request comes from 127.0.0.1 and would otherwise mostly be answered 429).
Exit status 1 when any 5xx or failed check was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api import _load_average, _postgres_database, _server

UNLIMITED = {"SHUANGLU_ANONYMOUS_REQUESTS_PER_MINUTE": "10000000",
             "SHUANGLU_ANONYMOUS_REFUSALS_PER_MINUTE": "10000000",
             "SHUANGLU_LOGIN_MAX_FAILURES": "10000000",
             "SHUANGLU_LOGIN_MAX_ATTEMPTS_PER_IP": "10000000",
             "SHUANGLU_LOGIN_MAX_ATTEMPTS_PER_USER": "10000000"}


@contextlib.contextmanager
def _database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "postgres":
        with _postgres_database() as url:
            yield url
    else:
        yield f"sqlite://{folder / 'fuzz.sqlite3'}"


async def _campaign(database_url: str, folder: Path, cases: int, seed: int,
                    per_operation: int) -> Any:
    from aiohttp.test_utils import TestServer

    from tests.api_fuzz import FAKE_WECHAT_APPS, fake_wechat_environment
    from tests.channels.fake_wechat import FakeWeChat

    # The channels talk to a fake WeChat on loopback, as in the suite.
    fake = FakeWeChat()
    for app_id, secret in FAKE_WECHAT_APPS.items():
        fake.register_app(app_id, secret)
    wechat = TestServer(fake.app(), host="127.0.0.1")
    await wechat.start_server()
    env = {**UNLIMITED, **fake_wechat_environment(str(wechat.make_url("")))}
    try:
        return await _fuzz(database_url, folder, cases, seed, per_operation, env)
    finally:
        await wechat.close()


async def _fuzz(database_url: str, folder: Path, cases: int, seed: int, per_operation: int,
                env: dict[str, str]) -> Any:
    from tests.api_fuzz import Report, fuzz, target

    async with _server(folder, database_url, env) as harness:
        app = await target(harness)
        document = app.document
        base_url = str(harness.client._base_url).rstrip("/")
        total = Report()
        round_ = 0
        started = time.perf_counter()
        while total.cases < cases:
            round_ += 1
            part = await asyncio.to_thread(fuzz, document, base_url, app.identities,
                                           examples_per_operation=per_operation,
                                           seed=seed + round_, path_values=app.path_values)
            total.merge(part)
            print(f"round {round_} (seed {seed + round_}): {part.cases} cases, "
                  f"{part.server_errors} × 5xx, {len(part.failures)} failed checks; total "
                  f"{total.cases} in {time.perf_counter() - started:.0f} s", flush=True)
        total.seconds = time.perf_counter() - started
        operations = sum(len(ops) for ops in document["paths"].values())
        return total, operations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=50_000)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-operation", type=int, default=200,
                        help="generated cases per operation and round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp, \
            _database(args.database, Path(tmp)) as url:
        report, operations = asyncio.run(
            _campaign(url, Path(tmp), args.cases, args.seed, args.per_operation))
    print(f"\n{report.cases} cases over {len(report.per_operation)} of {operations} operations "
          f"on {args.database} in {report.seconds:.0f} s "
          f"({report.cases / max(report.seconds, 1e-9):.0f} cases/s); {_load_average()}")
    print("statuses: " + ", ".join(f"{s} × {n}" for s, n in sorted(report.statuses.items())))
    print(f"5xx answers: {report.server_errors} (target 0)")
    kinds = report.failure_kinds()
    print(f"failed checks: {len(report.failures)} in {len(kinds)} kinds (target 0)")
    for kind, n in kinds.most_common(50):
        print(f"  {n} × {kind}")
    return 1 if report.server_errors or report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
