"""`advisor serve` as a real process on a free loopback port, for tests that need real HTTP."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(db_file: Path, *args: str, port: int | None = None, **env: str) -> Iterator[str]:
    """The server on a SQLite file (on ``port``, else a free one); yields its base URL once
    /readyz answers. Fails the test if the server printed a traceback."""
    port = port or free_port()
    environ = {**os.environ, "ADVISOR_DATABASE_URL": f"sqlite:///{db_file}",
               "ADVISOR_LOG_LEVEL": "warning", **env}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), *args],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("advisor serve did not become ready")
        yield url
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        assert "Traceback" not in out, out
