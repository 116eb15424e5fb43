"""A real server on a loopback port, started as `aiayn serve` in a subprocess."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aiayn.serving.load import start_server


@pytest.fixture(scope="session")
def launch():
    """Start another server: `process, url = launch(checkpoint, *extra_args)`."""
    return start_server


@pytest.fixture(scope="session")
def server(trained_run: Path) -> Iterator[str]:
    process, url = start_server(trained_run)
    yield url
    process.terminate()
    process.wait(timeout=90)
