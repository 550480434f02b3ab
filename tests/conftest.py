from __future__ import annotations

import pytest

from tests.support import FakePinterest, SignalEdge, create_integration, create_source

# Tests that need a fixture of these start a real process (a signal-edge server, a browser):
# they are marked `process` for them, and stay out of the fast tier (`make test-fast`).
PROCESS_FIXTURES = {"edge", "edge_factory", "shop", "nodes", "page", "context", "browser"}


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(item.fixturenames) or item.path.parent.name == "e2e":
            item.add_marker(pytest.mark.process)


@pytest.fixture
def fake_pinterest():
    fake = FakePinterest().start()
    yield fake
    fake.stop()


@pytest.fixture
def edge_factory(tmp_path, fake_pinterest):
    """Start real `signal-edge serve` processes; all are stopped at the end of the test."""
    started: list[SignalEdge] = []

    def start(**kwargs) -> SignalEdge:
        kwargs.setdefault("pinterest_url", fake_pinterest.url)
        process = SignalEdge(tmp_path, **kwargs).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def edge(edge_factory):
    return edge_factory()


@pytest.fixture
def shop(edge):
    """A source with one Pinterest integration on a running signal-edge."""
    with edge.admin() as admin:
        source = create_source(admin)
        integration = create_integration(admin, source["id"])
    return source, integration


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the whole run (see tests/pg.py)."""
    from tests.pg import PostgresServer

    server = PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(postgres):
    """A fresh, empty database of that cluster."""
    return postgres.create_database()


@pytest.fixture
def nodes(tmp_path, pg_url, fake_pinterest):
    """start(n, **env) -> n signal-edge processes on one PostgreSQL database, sharing a key file;
    each must end without a traceback in its log."""
    started: list[SignalEdge] = []

    def start(n: int = 2, **env) -> list[SignalEdge]:
        for _ in range(n):
            node = SignalEdge(tmp_path, fake_pinterest.url, env={
                "SIGNAL_DATABASE_URL": pg_url, "SIGNAL_SECRET_KEY_FILE": str(tmp_path / "cluster.key"),
                "SIGNAL_FLUSH_INTERVAL": "0.1", **env})
            started.append(node.start())
        return started[-n:]

    yield start
    for node in started:
        node.stop()
    for node in started:
        assert "Traceback" not in node.output(), node.output()[-3000:]


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backend(request, tmp_path):
    """An async context manager that opens (database, config store, queue) of each backend, for
    the shared suites that every backend must pass. Opened inside the test's event loop.
    "memory" is SQLite's code and SQL on a database in this process's memory (the fast tier's
    backend): a connection held for the whole test keeps it between opens, as a file would."""
    import sqlite3
    import uuid
    from contextlib import asynccontextmanager

    from collector.services import close_database, open_backend
    from collector.settings import load_settings

    if request.param == "postgres":
        flags = {"database_url": request.getfixturevalue("pg_url")}
    elif request.param == "memory":
        flags = {"db": f"file:/signal-edge-{uuid.uuid4().hex}?vfs=memdb"}
        keeper = sqlite3.connect(flags["db"], uri=True)
        request.addfinalizer(keeper.close)
    else:
        flags = {"db": str(tmp_path / "backend.db")}
    settings = load_settings(flags, environ={})

    @asynccontextmanager
    async def opened(node: str = "node-a", serving: bool = False, clock=None):
        """`clock`: the queue's clock (a callable), instead of the backend's own."""
        db, store, queue = await open_backend(settings, node, serving=serving, clock=clock)
        try:
            yield db, store, queue
        finally:
            await queue.close()
            await close_database(db)

    opened.kind = request.param
    opened.settings = settings
    return opened
