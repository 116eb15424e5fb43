"""Start `aiayn serve` in a child process and wait until it answers (for scripts, notebooks,
benchmarks and tests); the standard library only, like the rest of the serving extra's needs."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def start_server(checkpoint: str, *extra: str, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start `aiayn serve` on a free loopback port and wait until /healthz answers; returns the
    process and its base URL. The caller stops it (terminate() lets in-flight requests finish)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The server's log goes to a file: a pipe nobody reads would fill up and stall the server.
    log = open(os.environ["AIAYN_SERVER_LOG"], "w+b") if os.environ.get("AIAYN_SERVER_LOG") else tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", "aiayn.cli", "serve", "--checkpoint", str(checkpoint),
                                "--port", str(port), *extra], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"aiayn serve exited: {log.read().decode(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return process, url
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"aiayn serve did not answer within {timeout_s:.0f} s")
