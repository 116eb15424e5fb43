"""A real server on a loopback port, started as `aiayn serve` in a subprocess."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "aiayn.cli", "serve", "--checkpoint", str(checkpoint),
                                "--port", str(port), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start in 120 s")


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
