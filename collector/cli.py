"""`signal-edge serve | demo | admin-token | rotate-secret-key | copy` (design section 2)."""

from __future__ import annotations

import argparse
import os
import sys

from collector.loop import run_on_loop
from collector.settings import SettingsError, load_settings
from delivery.version import version


def _database(parser: argparse.ArgumentParser, default_db: str = "./signal-edge.db") -> None:
    parser.add_argument("--db", help=f"SQLite file, for one process (default {default_db}; SIGNAL_DB)")
    parser.add_argument("--database-url", dest="database_url",
                        help="postgresql://user:password@host:port/db: PostgreSQL, for several processes or "
                        "nodes, instead of the SQLite file (SIGNAL_DATABASE_URL)")


def _common(parser: argparse.ArgumentParser, default_db: str = "./signal-edge.db") -> None:
    parser.add_argument("--host", help="edge address (default 127.0.0.1; SIGNAL_HOST)")
    parser.add_argument("--port", type=int, help="edge port (default 8080; SIGNAL_PORT)")
    parser.add_argument("--admin-port", type=int, dest="admin_port",
                        help="admin port (default 8084; SIGNAL_ADMIN_PORT)")
    _database(parser, default_db)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="signal-edge", description="First-party server-side tag for Pinterest.")
    p.add_argument("--version", action="version", version=f"signal-edge {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the edge, the admin API and the delivery loop")
    _common(serve)
    serve.add_argument("--workers", type=int, help="processes that share the ports (PostgreSQL only; default 1)")
    serve.add_argument("--reuse-port", action="store_true", dest="reuse_port", help=argparse.SUPPRESS)
    demo = sub.add_parser("demo", help="serve, plus a local Pinterest sandbox and a demo shop page")
    _common(demo, "./signal-edge-demo.db")
    demo.add_argument("--sandbox-port", type=int, default=8085, help="Pinterest sandbox port (default 8085)")
    demo.add_argument("--shop-port", type=int, default=8000, help="demo shop port (default 8000)")
    demo.add_argument("--rotate", action="store_true", help="issue a new admin token (the demo keeps its token "
                      "across restarts)")
    token = sub.add_parser("admin-token", help="issue a new admin token")
    token.add_argument("--rotate", action="store_true", help="replace the admin token and print the new one")
    _database(token)
    rekey = sub.add_parser("rotate-secret-key", help="encrypt the stored tokens with a new secret key, written to a "
                           "0600 file first (stop every signal-edge first)")
    _database(rekey)
    backup = sub.add_parser("backup", help="copy the SQLite database, online and consistent, to a new 0600 file")
    backup.add_argument("--to", dest="backup_to", required=True, help="the backup file to write (must not exist)")
    backup.add_argument("--db", help="SQLite file (default ./signal-edge.db; SIGNAL_DB)")
    copy = sub.add_parser("copy", help="copy a SQLite deployment into PostgreSQL, losing nothing (stop it first)")
    copy.add_argument("--from", dest="source", required=True, help="the SQLite file")
    copy.add_argument("--to", dest="target",
                      help="postgresql://user:password@host:port/db (default: SIGNAL_DATABASE_URL)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items()
             if k in ("host", "port", "admin_port", "db", "database_url", "workers")}
    if args.command == "demo" and flags.get("db") is None and flags.get("database_url") is None \
            and not os.environ.get("SIGNAL_DB") and not os.environ.get("SIGNAL_DATABASE_URL"):
        flags["db"] = "./signal-edge-demo.db"
    environ = None
    if args.command == "copy":
        # From the file it names, to --to or else the URL the README's setup exports: SIGNAL_DB and
        # SIGNAL_DATABASE_URL say where a server runs, not what to copy.
        args.target = args.target or os.environ.get("SIGNAL_DATABASE_URL")
        if not args.target:
            print("signal-edge: copy needs a target: --to postgresql://user:password@host:port/db, or "
                  "SIGNAL_DATABASE_URL set to it", file=sys.stderr)
            return 2
        flags = {"db": args.source}
        environ = {k: v for k, v in os.environ.items() if k not in ("SIGNAL_DB", "SIGNAL_DATABASE_URL")}
    try:
        settings = load_settings(flags, environ)
    except SettingsError as exc:
        print(f"signal-edge: {exc}", file=sys.stderr)
        return 2

    from collector.runtime import StartupError, configure_logging, run
    from delivery.store import StorageUnusable

    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "serve" and settings.workers > 1:
            from collector.workers import serve_workers

            return serve_workers(settings, sys.argv[1:] if argv is None else argv)
        if args.command == "serve":
            settings.reuse_port = args.reuse_port
            return run_on_loop(run(settings))
        if args.command == "backup":
            return _backup(settings, args.backup_to)
        if args.command == "copy":
            from collector.copy import copy_deployment

            return run_on_loop(copy_deployment(settings, args.target))
        if args.command == "demo":
            from collector.demo import demo_banner, demo_setup

            settings.pinterest_api_base = f"http://127.0.0.1:{args.sandbox_port}"
            if "SIGNAL_PINTEREST_OAUTH_URL" not in os.environ:  # Connect with Pinterest signs in at the sandbox
                settings.pinterest_oauth_url = f"http://localhost:{args.sandbox_port}/oauth/"
            setup = demo_setup(args.sandbox_port, args.shop_port, args.rotate)
            return run_on_loop(run(settings, setup, demo_banner(args.shop_port, args.sandbox_port)))
        if args.command == "rotate-secret-key":
            return run_on_loop(_rotate_secret_key(settings))
        return run_on_loop(_admin_token(settings, args.rotate))
    except (StartupError, StorageUnusable) as exc:
        print(f"signal-edge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _backup(settings, target: str) -> int:
    from pathlib import Path

    from collector.backup import BackupError, backup

    try:
        print(backup(settings, Path(target)))
    except BackupError as exc:
        print(f"signal-edge backup: {exc}", file=sys.stderr)
        return 1
    return 0


async def _admin_token(settings, rotate: bool) -> int:
    if not rotate:
        print("Admin tokens are shown only once and only their hash is stored.\n"
              "Run `signal-edge admin-token --rotate` to replace the token and print the new one.")
        return 0
    from collector.admin.auth import AdminAuth
    from collector.services import close_database, node_id, open_backend

    db, store, _ = await open_backend(settings, node_id(), serving=False)  # beside a running server
    try:
        token = await AdminAuth(store, "").rotate()
    finally:
        await close_database(db)
    print(token)
    print("The previous admin token no longer works (running servers notice within a second).", file=sys.stderr)
    return 0


async def _rotate_secret_key(settings) -> int:
    from collector.keys import load_secret_key, rotate_secret_key
    from collector.services import (
        close_database,
        node_id,
        open_backend,
        serving_stopped,
    )
    from delivery.secrets import SecretBox

    # No process may serve meanwhile: it would keep sealing tokens with the old key. A SQLite
    # file's server holds its lock (`serving` takes it); PostgreSQL's nodes hold serving_stopped's.
    db, store, _ = await open_backend(settings, node_id(), serving=not settings.database_url)
    try:
        async with serving_stopped(settings):
            await store.open(SecretBox(await load_secret_key(store, settings.secret_key, settings.key_file)))
            written = await rotate_secret_key(store, bool(settings.secret_key), settings.key_file)
    finally:
        await close_database(db)
    if settings.secret_key:
        print(f"The stored tokens are now encrypted with a new key, written to {written} (mode 0600). Set "
              "SIGNAL_SECRET_KEY to its content on every node before starting signal-edge again (the old key no "
              "longer opens them), then delete the file. UI sessions have ended.", file=sys.stderr)
    else:
        print(f"The stored tokens are now encrypted with a new key, written to {written}. "
              "UI sessions have ended; copy the file to every node.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
