"""What the benchmark scripts share: a free loopback port, and `rag serve` started on one and waited for."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

RAG = str(Path(sys.executable).with_name("rag"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    """Poll the URL until it answers 200; a process that exits or a deadline passed is an error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{url} did not come up (exit code {process.poll()})")


def start_serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`rag serve` on a free loopback port with these environment overrides; returns the process and its URL."""
    port = free_port()
    full_env = {**os.environ, **env, "RAG_SERVER__PORT": str(port)}
    process = subprocess.Popen([RAG, "serve"], env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/", process)
    return process, url
