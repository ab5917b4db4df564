"""The ``contact-center`` command: serve, migrate, user, replay."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from contact_center import __version__

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from contact_center.config import Settings

log = logging.getLogger("contact_center")

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_REFUSED = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contact-center",
        description="Telephony and omnichannel contact-center server with a CRM core.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    config_parent = argparse.ArgumentParser(add_help=False)
    config_parent.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $CC_CONFIG, else ./config.yaml if present)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("serve", parents=[config_parent], help="run the server")
    sub.add_parser("migrate", parents=[config_parent], help="apply database migrations")

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_sub.add_parser("add", parents=[config_parent], help="create a user")
    add.add_argument("--login", required=True)
    add.add_argument("--role", required=True, choices=["admin", "head", "manager"])
    add.add_argument(
        "--extension",
        action="append",
        default=[],
        metavar="EXT",
        help="a PBX extension the user owns (repeatable)",
    )
    add.add_argument("--name", default="", help="display name")
    add.add_argument("--email")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (else one is generated and printed)",
    )
    user_sub.add_parser("list", parents=[config_parent], help="list users")

    demo = sub.add_parser(
        "demo",
        parents=[config_parent],
        help="run with seeded demo data and a simulated PBX placing calls",
    )
    demo.add_argument(
        "--database-url", help="database for the demo (default: SQLite in ./data/demo.sqlite3)"
    )
    demo.add_argument(
        "--call-every",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="average time between simulated calls (default 15)",
    )
    demo.add_argument(
        "--message-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="average time between customers' messages on WhatsApp, Telegram and e-mail "
        "(default: as --call-every)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the data of the previous run (default: every start begins afresh)",
    )

    replay = sub.add_parser(
        "replay",
        parents=[config_parent],
        help="fold a raw AMI capture and print one JSON object per finished call",
    )
    replay.add_argument("trace", metavar="TRACE")
    replay.add_argument("--pbx", help="name of the PBX in config whose trunks apply")
    return parser


def _stop_quietly(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    # Until the server installs its own handlers (and after it removed them), a SIGTERM ends
    # the process quietly with status 0: a service manager stopping it during start-up (the
    # imports alone take a second or two) is not an error.
    signal.signal(signal.SIGTERM, _stop_quietly)
    # Imported here, after the handler: configuration pulls in pydantic, logs pulls in aiohttp.
    from contact_center import logs
    from contact_center.config import ConfigError, load_settings

    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    level = settings.server.log_level
    if args.command == "replay" and level in ("INFO", "DEBUG"):
        level = "WARNING"  # replay's output is the JSON on stdout; keep stderr for problems
    logs.configure(settings.server.log_format, level)
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "user":
        if args.user_command == "add":
            return asyncio.run(_user_add(settings, args))
        return asyncio.run(_user_list(settings))
    if args.command == "replay":
        return _replay(settings, args)
    if args.command == "demo":
        from contact_center import demo

        return asyncio.run(
            demo.run(
                settings,
                database_url=args.database_url,
                call_every_s=args.call_every,
                keep=args.keep,
                message_every_s=args.message_every,
            )
        )
    raise AssertionError(args.command)


def serve(settings: Settings) -> int:
    """Run the HTTP server until SIGINT/SIGTERM, then shut down within the configured time."""
    from contact_center.config import ConfigError

    try:
        return asyncio.run(_serve(settings))
    except ConfigError as exc:  # configuration that only the database can check (start-up)
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_CONFIG


async def _serve(settings: Settings) -> int:
    """A stand-in answers on the port while the runtime starts (it may wait long for the
    database); the server takes the port over (SO_REUSEPORT) once started, then serves until
    a signal, then stops: in-flight requests get ``server.shutdown_timeout_s``."""
    from aiohttp import web

    from contact_center import logs
    from contact_center.app import create_app, freeze_heap_after_startup
    from contact_center.startup import StartupProgress, standin_app

    host, port = settings.server.host, settings.server.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    progress = StartupProgress()
    app = create_app(settings, progress=progress)
    freeze_heap_after_startup(app)
    log.info("contact-center %s starting on http://%s:%s", __version__, host, port)
    standin = web.AppRunner(standin_app(progress), access_log=None)
    await standin.setup()
    await web.TCPSite(standin, host, port, reuse_port=True).start()
    runner = web.AppRunner(
        app,
        access_log_class=logs.AccessLogger,
        access_log=logging.getLogger("contact_center.access"),
        shutdown_timeout=settings.server.shutdown_timeout_s,
    )
    started = asyncio.ensure_future(runner.setup())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():  # stopped while starting: what started is stopped again
            started.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await started
        else:
            started.result()  # a failed start raises here
            await web.TCPSite(runner, host, port, reuse_port=True).start()
            await standin.cleanup()
            log.info("contact-center serving on http://%s:%s", host, port)
            await stopped
    finally:
        stopped.cancel()
        if standin.sites:
            await standin.cleanup()
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("contact-center stopped")
    return 0


async def _with_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[int]]) -> int:
    """Run ``work(engine)`` once the database answers; one clear line if it never does."""
    from contact_center import db

    engine = db.create_engine(settings.database)
    try:
        await db.wait_for_database(engine, give_up_after=settings.database.connect_retry_max_s)
        return await work(engine)
    except db.DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        await engine.dispose()


async def _migrate(settings: Settings) -> int:
    from contact_center import db

    async def work(engine: AsyncEngine) -> int:
        before, after = await db.migrate(engine)
        print(f"database at revision {after}" + ("" if before == after else f" (was {before})"))
        return 0

    return await _with_database(settings, work)


async def _user_add(settings: Settings, args: argparse.Namespace) -> int:
    from contact_center import db
    from crm_core.errors import DomainError
    from crm_core.users import service as users
    from crm_core.users.passwords import new_password

    generated = not args.password_stdin
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else new_password()

    async def work(engine: AsyncEngine) -> int:
        await db.migrate(engine)
        async with db.sessionmaker(engine)() as session:
            try:
                user, _ = await users.create_user(
                    session,
                    login=args.login,
                    role=args.role,
                    password=password,
                    extensions=args.extension,
                    display_name=args.name,
                    email=args.email,
                    scrypt_n=settings.auth.scrypt_n,
                    must_change_password=generated,
                )
            except DomainError as exc:
                print(f"error: {exc.message}", file=sys.stderr)
                return EXIT_REFUSED
            await session.commit()
        exts = ", ".join(e.extension for e in user.extensions) or "none"
        print(f"created {user.role} {user.login!r} (id {user.id}, extensions: {exts})")
        if generated:
            print(f"one-time password: {password}")
        return 0

    return await _with_database(settings, work)


async def _user_list(settings: Settings) -> int:
    from contact_center import db
    from crm_core.users import service as users

    async def work(engine: AsyncEngine) -> int:
        async with db.sessionmaker(engine)() as session:
            for user in await users.list_users(session):
                exts = ",".join(e.extension for e in user.extensions) or "-"
                state = "active" if user.is_active else "disabled"
                print(f"{user.id}\t{user.login}\t{user.role}\t{exts}\t{state}")
        return 0

    return await _with_database(settings, work)


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    if args.pbx:
        pbx = next((p for p in settings.pbx if p.name == args.pbx), None)
        if pbx is None:
            print(f"error: no PBX named {args.pbx!r} in the configuration", file=sys.stderr)
            return EXIT_CONFIG
        trunks, pattern = pbx.trunks, pbx.extension_pattern
    elif settings.pbx:
        trunks, pattern = settings.pbx[0].trunks, settings.pbx[0].extension_pattern
    else:
        print(
            "error: the configuration lists no PBX (pbx: [...]) to take trunks from",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    from ami.replay import ReplayError, iter_replay, read_chunks

    out = sys.stdout
    try:
        for call in iter_replay(
            read_chunks(args.trace),
            trunks=trunks,
            extension_pattern=pattern,
            count_threshold_s=settings.telephony.count_threshold_s,
        ):
            out.write(json.dumps(call, ensure_ascii=False) + "\n")
            out.flush()
    except OSError as exc:
        print(f"error: cannot read {args.trace}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ReplayError as exc:
        print(f"error: {args.trace}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0
