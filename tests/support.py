"""Test support: real servers on loopback ports, a real `signal-edge serve` subprocess,
and an admin client. Shared by tests/ and e2e/."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import httpx
import uvicorn

from delivery.pinterest.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "sea_test_admin_token_0123456789abcdef"
AD_ACCOUNT = "549764982399"
ACCESS_TOKEN = "pina_TEST_ACCESS_TOKEN_1234"
CONVERSION_TOKEN = "ct_TEST_CONVERSION_TOKEN_5678"


def _port_range() -> range:
    """This test process's own ports, below the kernel's ephemeral range: a port the kernel hands
    out (bind to 0, or the local end of an outgoing connection, a browser's among them) could be
    taken again between our pick and the server's bind, which CI met ("Address already in use").
    Each xdist worker has a slice of its own; a random start keeps its subprocesses apart."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    low = max(1024, ephemeral - 12_000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")[2:]
    size = (ephemeral - low) // 8
    start = low + size * (int(worker) % 7 + 1 if worker.isdigit() else 0)
    return range(start, start + size)


_PORTS = _port_range()
_START = int.from_bytes(os.urandom(2), "big") % len(_PORTS)
_CANDIDATES = itertools.cycle([*_PORTS[_START:], *_PORTS[:_START]])


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 and ::1, from this process's range."""
    for port in itertools.islice(_CANDIDATES, len(_PORTS)):
        if all(_bindable(family, host, port) for family, host in ((socket.AF_INET, "127.0.0.1"),
                                                                  (socket.AF_INET6, "::1"))):
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


def _bindable(family: int, host: str, port: int) -> bool:
    try:
        with socket.socket(family) as sock:
            sock.bind((host, port))
        return True
    except OSError as exc:  # a host without IPv6 has no ::1 to take
        return exc.errno != errno.EADDRINUSE


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "condition",
             sleep: Callable[[float], Any] = time.sleep):
    """Poll until `predicate()` is truthy. With Playwright, pass `sleep=lambda s: page.wait_for_timeout(s * 1000)`
    so the browser's events are dispatched while waiting."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # the server may not be up yet
            last = exc
        sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def until(call: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02):
    """wait_for in an event loop: await `call()` until it gives something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := await call():
            return found
        await asyncio.sleep(interval)
    raise AssertionError(f"nothing came within {timeout}s")


class Recording(asyncio.Transport):
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


def run_async(coro):
    """asyncio.run in a thread of its own: under Playwright's sync API the main thread already
    runs an event loop (and test order must not matter)."""
    result: list = []

    def main() -> None:
        try:
            result.append((True, asyncio.run(coro)))
        except BaseException as exc:  # handed to the caller
            result.append((False, exc))

    worker = threading.Thread(target=main)
    worker.start()
    worker.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerThread":
        # (requests a test left hanging are cut after a second at its end, not waited out)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, what=f"server on {self.port}")
        return self

    def stop(self) -> None:
        if self.server:
            self.server.should_exit = True
        if self.thread:
            self.thread.join(10)


class FakePinterest(ServerThread):
    """The package's Pinterest sandbox, with the test credentials registered."""

    def __init__(self, port: int | None = None, sandbox: Sandbox | None = None) -> None:
        self.sandbox = sandbox or Sandbox()
        if sandbox is None:
            self.sandbox.add_token(ACCESS_TOKEN)
            self.sandbox.add_token(CONVERSION_TOKEN)
        super().__init__(self.sandbox, port)


class SignalEdge:
    """A real `python -m collector serve` process."""

    def __init__(self, tmp: Path, pinterest_url: str, env: dict[str, str] | None = None,
                 db: Path | None = None, command: str = "serve", extra_args: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.db = db or tmp / "signal-edge.db"
        self.port = free_port()
        self.admin_port = free_port()
        self.pinterest_url = pinterest_url
        self.command = command
        self.extra_args = extra_args
        self.env = {
            "SIGNAL_ADMIN_TOKEN": ADMIN_TOKEN,
            "SIGNAL_PINTEREST_API_BASE": pinterest_url,
            "SIGNAL_FLUSH_INTERVAL": "0.2",
            "SIGNAL_RETRY_DELAYS": "0.2,0.4,0.8,1,1,1,1",
            "SIGNAL_REQUEST_TIMEOUT": "5",
            "SIGNAL_AUTH_RECHECK": "30",
            "SIGNAL_SHUTDOWN_GRACE": "3",
            "SIGNAL_LOG_LEVEL": "info",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.log_path = tmp / f"signal-edge-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> "SignalEdge":
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNAL_")}
        env.update(self.env)
        self.log = open(self.log_path, "ab")
        database = ["--db", str(self.db)] if "SIGNAL_DATABASE_URL" not in self.env else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", self.command, "--port", str(self.port),
             "--admin-port", str(self.admin_port), *database, *self.extra_args],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._healthy, timeout=20, what="signal-edge to start")
        except BaseException:  # not handed to any fixture yet: nobody else would stop it
            self.stop(signal.SIGKILL)
            raise
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"signal-edge exited with {self.proc.returncode}:\n{self.output()}")
        return httpx.get(self.url + "/healthz", timeout=1).status_code == 200 and \
            httpx.get(self.admin_url + "/healthz", timeout=1).status_code == 200

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.admin_url + "/v1/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                            timeout=10)


@contextlib.contextmanager
def shop_running(tmp: Path, **source_fields):
    """A fake Pinterest and a signal-edge with one source and its integration, for a whole
    module of tests; fails if the server logged a traceback meanwhile."""
    fake = FakePinterest().start()
    edge = SignalEdge(tmp, fake.url).start()
    try:
        with edge.admin() as admin:
            source = create_source(admin, **source_fields)
            create_integration(admin, source["id"])
        yield edge, source
    finally:
        log = edge.output()
        edge.stop()
        fake.stop()
    assert "Traceback" not in log, log[-3000:]


def create_source(admin: httpx.Client, **fields) -> dict:
    """Every test client is 127.0.0.1: the per-client limit is lifted unless a test sets it."""
    body = {"name": "Test shop", "client_rate_limit_per_second": 1_000_000, "client_rate_limit_burst": 1_000_000,
            **fields}
    response = admin.post("/sources", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def create_integration(admin: httpx.Client, source_id: str, **fields) -> dict:
    config = {"ad_account_id": AD_ACCOUNT, "access_token": ACCESS_TOKEN, "conversion_token": CONVERSION_TOKEN,
              **fields.pop("config", {})}
    body = {"source_id": source_id, "vendor": "pinterest", "name": "Pinterest", "enabled": True,
            "config": config, "consent_categories": [], **fields}
    response = admin.post("/integrations", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def post_batch(edge_url: str, pipeline_key: str, events: list[dict], client: httpx.Client | None = None,
               **kwargs) -> httpx.Response:
    body = json.dumps({"pipeline_key": pipeline_key, "batch": events})
    sender = client or httpx
    return sender.post(edge_url + "/v1/batch", content=body, headers={"Content-Type": "text/plain",
                       "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Test/1.0", **kwargs.pop("headers", {})},
                       **kwargs)


def events(ids, name="Signed Up") -> list[dict]:
    return [{"type": "track", "event": name, "messageId": i} for i in ids]


def received(fake: FakePinterest) -> Counter:
    """How many times Pinterest received each event id (test events left out)."""
    return Counter(e["event_id"] for e in fake.sandbox.events(include_test=False))


def node_name(node: SignalEdge) -> str:
    """The name a running signal-edge gives itself in the cluster (its leases and counters)."""
    return re.search(r'signal_edge_node_info\{node="([^"]+)"', httpx.get(node.admin_url + "/metrics").text)[1]


def leased_by(pg_url: str, node: str) -> list[bytes]:
    """The payloads of the queue rows that `node` holds a lease on."""
    async def read() -> list[bytes]:
        import asyncpg

        conn = await asyncpg.connect(pg_url)
        try:
            return [r["payload"] for r in await conn.fetch("SELECT payload FROM queue WHERE lease_owner = $1", node)]
        finally:
            await conn.close()
    return run_async(read())


def stats(admin: httpx.Client, integration_id: str) -> dict:
    return admin.get(f"/integrations/{integration_id}").json()["delivery"]


class InProcessEdge:
    """signal-edge's own runtime in a thread of the test process: real servers on real sockets,
    with its services within reach for fault injection (`call` runs a coroutine on its loop)."""

    def __init__(self, tmp: Path, pinterest_url: str, env: dict[str, str] | None = None) -> None:
        from collector.settings import load_settings

        self.db = tmp / "in-process.db"
        self.port, self.admin_port = free_port(), free_port()
        environ = {
            "SIGNAL_ADMIN_TOKEN": ADMIN_TOKEN, "SIGNAL_PINTEREST_API_BASE": pinterest_url,
            "SIGNAL_FLUSH_INTERVAL": "0.2", "SIGNAL_RETRY_DELAYS": "0.2,0.4,0.8,1,1,1,1",
            "SIGNAL_REQUEST_TIMEOUT": "5", "SIGNAL_SHUTDOWN_GRACE": "3", **(env or {}),
        }
        self.settings = load_settings({"port": self.port, "admin_port": self.admin_port, "db": str(self.db)},
                                      environ=environ)
        self.services = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread: threading.Thread | None = None

    url = SignalEdge.url
    admin_url = SignalEdge.admin_url
    admin = SignalEdge.admin

    def start(self) -> "InProcessEdge":
        self.thread = threading.Thread(target=self._main, name="in-process signal-edge", daemon=True)
        self.thread.start()
        if not self._ready.wait(30) or self._error:
            raise AssertionError(f"signal-edge did not start in process: {self._error!r}")
        return self

    def _main(self) -> None:
        from collector.runtime import run

        async def serve() -> None:
            self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await run(self.settings, stop=self._stop, ready=self._started)

        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    def _started(self, services) -> None:
        self.services = services
        self._ready.set()

    def call(self, coro, timeout: float = 30):
        """Run `coro` on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(30)


@contextlib.asynccontextmanager
async def edge_in_process(tmp: Path, database_url: str | None = None, **source_fields):
    """The edge app of real services (a SQLite file in `tmp`, or `database_url`) in this event loop,
    with a source and its integration, behind an httpx client that calls it in process (no socket,
    no server). Delivery is not started: what the edge queued stays in the queue (`queued()`)."""
    from collector.edge.app import create_edge_app
    from collector.services import open_services
    from collector.settings import load_settings
    from delivery.config import Integration, PinterestConfig, Source

    flags = {"database_url": database_url} if database_url else {"db": str(tmp / f"edge-{time.monotonic_ns()}.db")}
    services = await open_services(load_settings(flags, environ={"SIGNAL_ADMIN_TOKEN": ADMIN_TOKEN}))
    try:
        fields = {"rate_limit_per_second": 1e9, "rate_limit_burst": 10**9, "client_rate_limit_per_second": 1e9,
                  "client_rate_limit_burst": 10**9, **source_fields}
        source = Source(id="src_inproc", name="in process", pipeline_key="dk_live_inproc", created_at=0, updated_at=0,
                        **fields)
        await services.store.put_source(source, None)
        await services.store.put_integration(Integration(
            id="int_inproc", source_id=source.id, name="Pinterest", created_at=0, updated_at=0,
            config=PinterestConfig(AD_ACCOUNT, ACCESS_TOKEN, CONVERSION_TOKEN)), None)
        transport = httpx.ASGITransport(app=create_edge_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
            yield services, source, client
    finally:
        await services.close()


@contextlib.asynccontextmanager
async def admin_in_process(tmp: Path, env: dict[str, str] | None = None, database_url: str | None = None):
    """signal-edge's services on a real SQLite file (or PostgreSQL) and its admin app, without
    servers: call it through `asgi_client`. Delivery is not started."""
    from collector.admin.app import create_admin_app
    from collector.services import open_services
    from collector.settings import load_settings

    where = {"database_url": database_url} if database_url else {"db": str(tmp / "admin.db")}
    settings = load_settings(where, environ={"SIGNAL_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})})
    services = await open_services(settings)
    try:
        yield services, create_admin_app(services)
    finally:
        await services.close()


async def queued(services, integration_id: str = "int_inproc") -> list:
    """The EdgeEvents queued for an integration, oldest first."""
    from delivery.events import event_decoder

    waiting = await services.queue.waiting([integration_id], None, 1000)
    return [event_decoder.decode(w.payload) for w in reversed(waiting)]


def asgi_client(app, client: str = "127.0.0.1", token: str | None = ADMIN_TOKEN, **headers) -> httpx.AsyncClient:
    """An httpx client that calls `app` in process, as if from `client`'s address."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, client=(client, 50123)), base_url="http://localhost",
                             headers=headers)


def most_in_a_window(times: list[float], width: float) -> int:
    """The most of the (sorted) times that fall within any `width` seconds."""
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= width:
            start += 1
        most = max(most, end - start + 1)
    return most
