"""Start, probe, measure and stop the servers under test (Express reference and Rampart).

Every server runs in its own process group (``start_new_session``) so that it and all its
workers are stopped together, by that group's id, on normal exit, on an exception and on
Ctrl-C (the ``atexit`` hook is a last resort for anything still running).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "admin@bench.local"
_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
# Helper processes that are not request workers (multiprocessing's trackers).
_HELPER_RE = re.compile(r"resource_tracker|semaphore_tracker|forkserver")

EXPRESS_ENV_KEYS = (
    "PORT",
    "HOST",
    "DATABASE_URL",
    "JWT_SECRET",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "ACCESS_TOKEN_TTL",
    "SESSION_TTL",
    "WORKERS",
    "POOL_MAX",
    "SESSION_CACHE_TTL_MS",
    "RATE_LIMIT_WINDOW_MS",
    "RATE_LIMIT_MAX",
    "BODY_LIMIT",
    "CORS_ORIGINS",
    "NODE_ENV",
)


class ServerError(RuntimeError):
    """A server or one of its setup commands failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(drop_prefixes: tuple[str, ...] = (), drop_keys: tuple[str, ...] = ()) -> dict[str, str]:
    """The current environment minus settings that could leak into a server under test."""
    return {k: v for k, v in os.environ.items() if k not in drop_keys and not k.startswith(drop_prefixes)}


def run_cli(cmd: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 180) -> str:
    """Run a setup command; its stdout, or ServerError with its output."""
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise ServerError(f"{cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        output = proc.stderr[-3000:] + proc.stdout[-1000:]
        raise ServerError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output}")
    return proc.stdout


def parse_token(stdout: str, what: str) -> str:
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    token = lines[-1] if lines else ""
    if not _JWT_RE.match(token):
        raise ServerError(f"{what} did not print an access token; it printed:\n{stdout[-1000:]}")
    return token


# --- /proc: worker memory -------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name (2nd field) may contain spaces and parentheses: split after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


@dataclass
class RssSample:
    """Resident memory of a server's worker processes (the leaves of its process tree)."""

    workers: list[dict[str, Any]] = field(default_factory=list)
    tree_kib: int = 0

    @property
    def sum_mib(self) -> float:
        return sum(int(w["rss_kib"]) for w in self.workers) / 1024

    @property
    def max_mib(self) -> float:
        return max((int(w["rss_kib"]) for w in self.workers), default=0) / 1024

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": len(self.workers),
            "sum_mib": round(self.sum_mib, 1),
            "max_mib": round(self.max_mib, 1),
            "tree_mib": round(self.tree_kib / 1024, 1),
            "processes": self.workers,
        }


def measure_rss(root_pid: int) -> RssSample:
    """Worker RSS: the leaf processes under ``root_pid`` (cluster/uvicorn workers), or the root
    itself when it has no children. ``tree_kib`` also counts supervisors and helpers."""
    children = _children_map()
    tree: list[int] = []
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    leaves = [p for p in tree if not children.get(p) and not _HELPER_RE.search(_cmdline(p))]
    if len(tree) > 1:
        leaves = [p for p in leaves if p != root_pid]
    workers = [{"pid": p, "rss_kib": _rss_kib(p), "cmd": _cmdline(p)} for p in sorted(leaves)]
    return RssSample(workers=workers, tree_kib=sum(_rss_kib(p) for p in tree))


# --- a running server ---------------------------------------------------------------------------

_LIVE: set[Server] = set()


@dataclass(eq=False)
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _LIVE.add(self)
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                resp = httpx.get(f"{self.base_url}/health/ready", timeout=2.0)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.25)
        raise ServerError(
            f"{self.name} not ready after {timeout:.0f} s ({last}); log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def rss(self) -> RssSample:
        if self.proc is None or self.proc.poll() is not None:
            return RssSample()
        return measure_rss(self.proc.pid)

    def _group_alive(self, pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left after ``timeout``."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is not None:
            pgid = proc.pid  # start_new_session: the group id is the leader's pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
            while self._group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._group_alive(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(timeout=5)


# --- the two implementations ----------------------------------------------------------------


def default_express_src() -> Path:
    return REPO_ROOT.parent / "shared" / "anchors" / "express"


def prepare_express(src: Path, dest: Path) -> None:
    """Copy the (read-only) reference into ``dest`` and ``npm ci`` there when its lock changed."""
    if not (src / "package.json").is_file():
        raise ServerError(f"no Express reference at {src} (use --express-src)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise ServerError("node and npm are needed for the Express reference")
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name in ("node_modules", ".git"):
            continue
        target = dest / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    for path in dest.rglob("*"):  # shared/ may be read-only; the copy must stay writable
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | 0o200)
    lock_hash = hashlib.sha256((src / "package-lock.json").read_bytes()).hexdigest()
    stamp = dest / ".bench-lock-sha256"
    if not (dest / "node_modules").is_dir() or not stamp.is_file() or stamp.read_text() != lock_hash:
        run_cli(["npm", "ci", "--no-audit", "--no-fund"], env=clean_env(), cwd=dest, timeout=600)
        stamp.write_text(lock_hash)


@dataclass
class Express:
    """The Express + pg reference (node:cluster, 2 workers, pool of 10 per worker)."""

    app_dir: Path
    jwt_secret: str
    workers: int = 2
    pool_max: int = 10
    name: str = "express"

    def env(self, database_url: str, port: int | None = None) -> dict[str, str]:
        env = clean_env(drop_keys=EXPRESS_ENV_KEYS)
        env.update(
            {
                "DATABASE_URL": database_url,
                "JWT_SECRET": self.jwt_secret,
                "NODE_ENV": "production",
                "HOST": "127.0.0.1",
                "WORKERS": str(self.workers),
                "POOL_MAX": str(self.pool_max),
                "RATE_LIMIT_MAX": "1000000",
                "ACCESS_TOKEN_TTL": "7200",
            }
        )
        if port is not None:
            env["PORT"] = str(port)
        return env

    def setup(self, database_url: str) -> str:
        """Create the schema and an admin; the admin's access token."""
        out = run_cli(["node", "mint-admin.js", ADMIN_EMAIL], env=self.env(database_url), cwd=self.app_dir)
        return parse_token(out, "node mint-admin.js")

    def server(self, database_url: str, port: int, log_path: Path) -> Server:
        return Server(
            self.name,
            ["node", "src/server.js"],
            self.env(database_url, port),
            port,
            log_path,
            cwd=self.app_dir,
        )


@dataclass
class Rampart:
    """Rampart through its CLI (``rampart migrate|users create|tokens issue|serve``)."""

    bin_path: Path
    jwt_secret: str
    workers: int = 2
    pool_size: int = 10
    name: str = "rampart"
    extra_env: dict[str, str] = field(default_factory=dict)  # more RAMPART_* settings

    def env(self, database_url: str) -> dict[str, str]:
        env = clean_env(drop_prefixes=("RAMPART_",))
        env.update(
            {
                "RAMPART_DATABASE_URL": database_url,
                "RAMPART_JWT_SECRET": self.jwt_secret,
                "RAMPART_ENV": "production",
                "RAMPART_ACCESS_TOKEN_TTL": "7200",
                "RAMPART_RATE_LIMIT": "1000000/minute",
                "RAMPART_DB_POOL_SIZE": str(self.pool_size),
                "RAMPART_ACCESS_LOG": "false",
                **self.extra_env,
            }
        )
        return env

    def _cli(self, *args: str, database_url: str) -> str:
        if not self.bin_path.exists():
            raise ServerError(f"{self.bin_path} not found (pip install -e . in the venv)")
        return run_cli([str(self.bin_path), *args], env=self.env(database_url), cwd=REPO_ROOT)

    def setup(self, database_url: str) -> str:
        """Migrate, create the admin; the admin's access token."""
        self._cli("migrate", database_url=database_url)
        self._cli(
            "users",
            "create",
            "--email",
            ADMIN_EMAIL,
            "--name",
            "Admin",
            "--role",
            "admin",
            database_url=database_url,
        )
        out = self._cli("tokens", "issue", "--email", ADMIN_EMAIL, database_url=database_url)
        return parse_token(out, "rampart tokens issue")

    def server(self, database_url: str, port: int, log_path: Path) -> Server:
        cmd = [
            str(self.bin_path),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(self.workers),
        ]
        return Server(self.name, cmd, self.env(database_url), port, log_path, cwd=REPO_ROOT)


Implementation = Express | Rampart
