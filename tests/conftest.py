from __future__ import annotations

import pytest

from tests.support import FakePinterest, SignalEdge, create_integration, create_source


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
