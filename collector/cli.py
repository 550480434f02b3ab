"""`signal-edge serve | demo | admin-token` (design section 2)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from collector.settings import SettingsError, load_settings


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="edge address (default 127.0.0.1; SIGNAL_HOST)")
    parser.add_argument("--port", type=int, help="edge port (default 8080; SIGNAL_PORT)")
    parser.add_argument("--admin-port", type=int, dest="admin_port", help="admin port (default 8084; SIGNAL_ADMIN_PORT)")
    parser.add_argument("--db", help="SQLite file (default ./signal-edge.db; SIGNAL_DB)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="signal-edge", description="First-party server-side tag for Pinterest.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the edge, the admin API and the delivery loop")
    _common(serve)
    demo = sub.add_parser("demo", help="serve, plus a local Pinterest sandbox and a demo shop page")
    _common(demo)
    demo.add_argument("--sandbox-port", type=int, default=8085, help="Pinterest sandbox port (default 8085)")
    demo.add_argument("--shop-port", type=int, default=8000, help="demo shop port (default 8000)")
    token = sub.add_parser("admin-token", help="issue a new admin token")
    token.add_argument("--rotate", action="store_true", help="replace the admin token and print the new one")
    token.add_argument("--db", help="SQLite file (default ./signal-edge.db; SIGNAL_DB)")
    rekey = sub.add_parser("rotate-secret-key", help="encrypt the stored tokens with a new secret key "
                           "(stop signal-edge first)")
    rekey.add_argument("--db", help="SQLite file (default ./signal-edge.db; SIGNAL_DB)")
    return p


def _run(coro) -> int:
    """Run on uvloop when it is installed (uvicorn[standard] brings it), else asyncio's loop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k in ("host", "port", "admin_port", "db")}
    if args.command == "demo" and flags.get("db") is None:
        flags["db"] = "./signal-edge-demo.db"
    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        print(f"signal-edge: {exc}", file=sys.stderr)
        return 2

    from collector.runtime import StartupError, configure_logging, run
    from delivery.store import StorageUnusable

    configure_logging(settings.log_level)
    try:
        if args.command == "serve":
            return _run(run(settings))
        if args.command == "demo":
            from collector.demo import demo_banner, demo_setup

            settings.pinterest_api_base = f"http://127.0.0.1:{args.sandbox_port}"
            setup = demo_setup(args.sandbox_port, args.shop_port)
            return _run(run(settings, setup, demo_banner(args.shop_port, args.sandbox_port)))
        if args.command == "rotate-secret-key":
            return _run(_rotate_secret_key(settings))
        return _run(_admin_token(settings, args.rotate))
    except (StartupError, StorageUnusable) as exc:
        print(f"signal-edge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _admin_token(settings, rotate: bool) -> int:
    if not rotate:
        print("Admin tokens are shown only once and only their hash is stored.\n"
              "Run `signal-edge admin-token --rotate` to replace the token and print the new one.")
        return 0
    from collector.admin.auth import AdminAuth
    from delivery.sqlite.config_store import SqliteConfigStore
    from delivery.sqlite.db import Database

    db = Database(settings.db)
    db.start()
    try:
        token = await AdminAuth(SqliteConfigStore(db), "").rotate()
    finally:
        db.close()
    print(token)
    print("The previous admin token no longer works (a running server notices within a second).", file=sys.stderr)
    return 0


async def _rotate_secret_key(settings) -> int:
    from collector.keys import load_secret_key, rotate_secret_key
    from delivery.secrets import SecretBox
    from delivery.sqlite.config_store import SqliteConfigStore
    from delivery.sqlite.db import Database

    db = Database(settings.db)
    db.start()
    try:
        store = SqliteConfigStore(db)
        await store.open(SecretBox(await load_secret_key(store, settings.secret_key, settings.key_file)))
        new = await rotate_secret_key(store, bool(settings.secret_key), settings.key_file)
    finally:
        db.close()
    if settings.secret_key:
        print(new)
        print("The stored tokens are now encrypted with the key above. Set SIGNAL_SECRET_KEY to it on every node "
              "before starting signal-edge again; the old key no longer opens them.", file=sys.stderr)
    else:
        print(f"The stored tokens are now encrypted with a new key, written to {settings.key_file}. "
              "UI sessions have ended; copy the file to every node.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
