"""Real `rampart serve` processes (and nginx in front of them) for the operations and scale-out tests.

Every process is started in a context manager that stops it in `finally`; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import free_port
from tests.test_cli import RAMPART, cli_env

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
START_TIMEOUT = 30.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early with {proc.returncode}"
        try:
            r = httpx.get(f"{url}/health/ready", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"not ready within {timeout} s: {last}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


@contextmanager
def serve(
    database_url: str,
    workdir: Path,
    *,
    workers: int = 1,
    name: str = "serve",
    extra_args: tuple[str, ...] = (),
    **env: str,
) -> Iterator[Server]:
    """`rampart serve` on a free loopback port, ready when yielded; stopped (SIGTERM, then kill) after."""
    port = free_port()
    log = workdir / f"{name}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                RAMPART,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--no-migrate",
                *extra_args,
            ],
            env=cli_env(database_url, **env),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        server = Server(proc, port, log)
        try:
            wait_ready(server.url, proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{server.output()}") from None
        yield server
    finally:
        stop(proc)


def nginx_command(upstream_ports: list[int], workdir: Path) -> tuple[list[str], Path, int]:
    """How to run Debian's nginx in the foreground with deploy/nginx.conf, the upstream ports filled in and
    a free port to listen on: (command, its prefix directory under `workdir`, the port)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="nginx-", dir=workdir))
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir()
    upstreams = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports)
    text = NGINX_CONF.read_text()
    text = text.replace("    server 127.0.0.1:8001 max_fails=1 fail_timeout=2s;\n", "")
    text = text.replace("    server 127.0.0.1:8000 max_fails=1 fail_timeout=2s;", upstreams)
    text = text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"], prefix, port


@contextmanager
def nginx(upstream_ports: list[int], workdir: Path) -> Iterator[str]:
    """Debian's nginx in the foreground (`nginx_command`); its URL."""
    command, prefix, port = nginx_command(upstream_ports, workdir)
    with (prefix / "logs" / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={k: v for k, v in os.environ.items() if k != "NGINX"},
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, signal.SIGQUIT)
