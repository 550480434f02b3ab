"""One process, one event loop: the edge and admin servers and the delivery loop
(plus, for the demo, the Pinterest sandbox and the shop page)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import uvicorn
from starlette.types import ASGIApp

from collector import logs
from collector.admin.app import create_admin_app
from collector.edge.app import create_edge_app
from collector.services import Services, close_database, open_services
from collector.settings import Settings
from collector.transport import Limits, guarded
from delivery import retention

log = logging.getLogger("signal_edge")


class StartupError(RuntimeError):
    pass


class _Server(uvicorn.Server):
    """uvicorn server whose signals are handled by the runtime, not by each server."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


@dataclass
class Listener:
    name: str
    app: ASGIApp
    host: str
    port: int
    after_delivery: bool = False  # keep serving while delivery flushes (the demo sandbox)


def bind(host: str, port: int, name: str, shared: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when proto says TCP,
    # and without it small responses wait ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:  # --workers: the kernel spreads connections over the processes
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port} for the {name}: {exc.strerror}; "
                           f"stop what uses that port or choose another one") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
ADMIN_CONNECTIONS = 256  # the admin port's own share: it stays reachable while the edge is flooded


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one (where the OS allows); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_limits(settings: Settings) -> tuple[Limits, Limits]:
    """The edge's and the admin port's limits. The connection caps together stay well below the
    process's file-descriptor limit, leaving room for the database and Pinterest connections."""
    fds = raise_fd_limit()
    edge = settings.max_connections or max(64, int((fds - ADMIN_CONNECTIONS) * 0.8))
    edge_limits = Limits(head_timeout=settings.head_timeout, body_timeout=settings.body_timeout, max_connections=edge)
    return edge_limits, msgspec.structs.replace(edge_limits, max_connections=ADMIN_CONNECTIONS)


def configure_logging(level: str, fmt: str = "text") -> None:
    logs.configure(level, fmt)


Setup = Callable[[Services], Awaitable[list[Listener]]]


async def run(settings: Settings, setup: Setup | None = None, banner: Callable[[Services], str] | None = None,
              stop: asyncio.Event | None = None, ready: Callable[[Services], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, or until `stop` is set (in-process use: no signal handlers,
    no GC tuning, `ready` is called with the running services). `setup` adds listeners (and
    data) for the demo."""
    services = await open_services(settings)
    try:
        listeners = [
            Listener("edge", create_edge_app(services), settings.host, settings.port),
            Listener("admin API", create_admin_app(services), settings.admin_host, settings.admin_port),
        ]
        if setup:
            listeners += await setup(services)
        sockets = [bind(listener.host, listener.port, listener.name, settings.reuse_port) for listener in listeners]
    except BaseException:
        await close_database(services.db)
        raise

    in_process = stop is not None
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    await services.delivery.start()
    background = [asyncio.create_task(services.lag.run()), asyncio.create_task(services.activity.run()),
                  asyncio.create_task(services.alerts.run()), asyncio.create_task(services.eqs.run()),
                  asyncio.create_task(retention.run(services.store, services.queue, retention_policy(settings),
                                                    settings.retention_interval))]
    if settings.reuse_port:  # one of --workers' processes: it ends with its parent
        from collector.parent import watch_parent

        background.append(asyncio.create_task(watch_parent(stop)))
    if not in_process:
        tune_gc()
    running = []  # (listener, server, its task)
    edge_limits, admin_limits = connection_limits(settings)
    for listener, sock in zip(listeners, sockets, strict=True):
        app = logs.AccessLog(listener.app, listener.name) if settings.access_log else listener.app
        server = _Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", proxy_headers=False,
            server_header=False, timeout_graceful_shutdown=3, timeout_keep_alive=KEEP_ALIVE,
            http=guarded(edge_limits if listener.name == "edge" else admin_limits),
        ))
        running.append((listener, server, asyncio.create_task(server.serve(sockets=[sock]))))
        log.info("%s listening on http://%s:%d", listener.name, listener.host, listener.port)
    if not settings.reuse_port:  # one of --workers' processes: the parent printed the banner
        show(banner(services) if banner else _banner(services), services)
    if ready:
        ready(services)

    # Until a signal, or until a server stops by itself.
    await asyncio.wait([asyncio.ensure_future(stop.wait()), *(task for _, _, task in running)],
                       return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down: no new requests; flushing what is ready for up to %.0fs", settings.shutdown_grace)
    await _stop([r for r in running if not r[0].after_delivery])
    for task in background:
        task.cancel()
    await services.close()
    await _stop([r for r in running if r[0].after_delivery])
    log.info("stopped; %d events stay queued on disk for the next start", services.queue.depth())
    return 0


def retention_policy(settings: Settings) -> retention.Retention:
    day = retention.DAY
    return retention.Retention(debug=settings.debug_retention_days * day,
                               dead_letters=settings.dead_letter_retention_days * day,
                               audit=settings.audit_retention_days * day,
                               volume=settings.alert_drop_baseline + settings.alert_drop_window)


def tune_gc() -> None:
    """Keep the cyclic GC off the request path: what start-up built lives for the whole run
    (frozen: never scanned again), and collections run rarer. Unchecked, full collections
    were the edge's p99 (28 ms against 10 ms); almost all garbage here is freed by refcounts."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _stop(group: list) -> None:
    for _, server, _ in group:
        server.should_exit = True
    await asyncio.gather(*(task for _, _, task in group), return_exceptions=True)


def _banner(services, workers: int = 1) -> str:
    s = services.settings
    lines = [
        "signal-edge is running" + (f" in {workers} processes" if workers > 1 else ""),
        f"  edge (tag and ingestion): {s.edge_url}   tag: {s.edge_url}/d.js",
        f"  admin API:                http://{s.admin_host}:{s.admin_port}/v1/admin",
        f"  database:                 {s.database}",
    ]
    token = services.new_admin_token
    if token and sys.stdout.isatty() and s.log_format != "json":
        lines.append(f"  admin token (shown once, only its hash is stored): {token}")
    elif token:
        lines.append("  admin token: " + _token_to_file(s, token))
    return "\n".join(lines)


def admin_token_file(settings: Settings):
    """Where a generated admin token is written when nobody watches the terminal: beside the key
    file (under systemd, in the state directory with the database)."""
    return settings.key_file.with_suffix(".admin-token")


def _token_to_file(settings: Settings, token: str) -> str:
    """Not a terminal (a service manager's journal, a log collector) or JSON logs: the token goes to
    a file only this user can read, never to the output. Returns what the banner says of it."""
    path = admin_token_file(settings)
    try:
        fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
    except OSError as exc:
        return (f"could not be written to {path} ({exc.strerror}); issue one with "
                "`signal-edge admin-token --rotate`")
    return f"written to {path} (readable by this user only): read it, keep it safe, then delete the file"


def show(text: str, services) -> None:
    """The banner: printed, or with JSON logs one log line per line of it (never a token)."""
    if services.settings.log_format != "json":
        print(text, flush=True)
        return
    token = services.new_admin_token
    for line in filter(None, (line.strip() for line in text.splitlines())):
        log.info(line.replace(token, "[not logged]") if token else line)
