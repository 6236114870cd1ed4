import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from broker import Broker  # noqa: E402


@pytest.fixture
def brokers(tmp_path_factory):
    """Start real Mosquittos on free loopback ports (`brokers(name, **options)`), all stopped
    after the test."""
    started: list[Broker] = []

    def start(name: str = "broker", **options) -> Broker:
        b = Broker(tmp_path_factory.mktemp(name), **options)
        b.start()
        started.append(b)
        return b
    yield start
    for b in started:
        b.stop()


@pytest.fixture
def broker(brokers):
    """A real Mosquitto on a free loopback port, stopped after the test."""
    return brokers()
