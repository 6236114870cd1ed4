import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from broker import Broker  # noqa: E402


@pytest.fixture
def broker(tmp_path_factory):
    """A real Mosquitto on a free loopback port, stopped after the test."""
    b = Broker(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()
