"""Real servers on loopback ports, started as `aiayn serve` in subprocesses."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aiayn.serving.launch import start_server


@pytest.fixture(scope="session")
def server(trained_run: Path) -> Iterator[str]:
    process, url = start_server(trained_run)
    yield url
    process.terminate()
    process.wait(timeout=90)


@pytest.fixture(scope="session")
def bf16_server(trained_run: Path) -> Iterator[tuple[str, int]]:
    """A --bf16 server with a short time limit per request, and its process id."""
    process, url = start_server(trained_run, "--bf16", "--timeout", "2", "--max-batch-tokens", "100000")
    yield url, process.pid
    process.terminate()
    process.wait(timeout=90)
