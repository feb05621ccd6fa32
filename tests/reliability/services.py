"""Servers a fault test may break: a private PostgreSQL and a private Redis on free loopback ports, a
webhook receiver, and `rampart serve --workers 2` against them.

The machine's shared PostgreSQL and Redis are never touched: stopping, restarting or filling a server is
done only to these private ones, each in its own temporary folder, removed afterwards. Every wait is
bounded, and every process started here is stopped in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import redis

from rampart.access.system import system_actor
from rampart.app import Rampart, create_app
from rampart.auth.sessions import open_session
from rampart.clitasks import migrate_all
from rampart.resources.manager import Context
from tests.conftest import make_settings
from tests.scale.servers import Server, serve
from tests.support import QuietHandler, free_port, serving

PG_BIN = Path(os.environ.get("RAMPART_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
WAIT = 30.0  # seconds: the bound on every start, stop and readiness wait here
WEBHOOK_SECRET = "whsec_reliability_" + "r" * 24


def available() -> str | None:
    """Why these tests cannot run here (None when they can): the server binaries must be installed."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL server binaries not found in {PG_BIN} (set RAMPART_PG_BIN)"
    if not Path(REDIS_SERVER).exists():
        return "redis-server is not installed"
    return None


def _run(cmd: list[str], *, as_postgres: bool) -> None:
    if as_postgres and os.geteuid() == 0:  # PostgreSQL refuses to run as root
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT + 10, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stdout}{out.stderr}")


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temporary folder), which may be stopped at will."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rampart-faults-pg-"))
        _give_to_postgres(self.root)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.tablespace: Path | None = None  # a small tmpfs, when the disk-full fault is possible here

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "rampart") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            as_postgres=True,
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 100\nshared_buffers = 32MB\n"
            )

    def start(self) -> None:
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                str(int(WAIT)),
                "start",
            ],
            as_postgres=True,
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast` is a clean shutdown; `immediate` a crash (no checkpoint: WAL replay at the next start)."""
        _run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", str(int(WAIT)), "stop"],
            as_postgres=True,
        )

    def running(self) -> bool:
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, timeout=WAIT, check=False).returncode == 0

    async def execute(self, sql: str, database: str = "postgres") -> None:
        conn = await asyncpg.connect(self.url(database), timeout=WAIT)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create_database(self) -> str:
        """The `rampart` database, migrated as `rampart migrate` does; its URL."""
        asyncio.run(self.execute('CREATE DATABASE "rampart"'))
        url = self.url()
        migrate_all(make_settings(url))
        return url

    def mount_small_tablespace(self, size_mb: int = 48) -> bool:
        """Move every table and index of `rampart` to a tablespace on a tmpfs of `size_mb`, so that filling
        that tmpfs makes the database's disk full while the WAL (on the real disk) keeps PostgreSQL up.
        Needs root (mount); False when it is not possible here."""
        if os.geteuid() != 0 or shutil.which("mount") is None:
            return False
        path = self.root / "small"
        path.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        if mounted.returncode != 0:
            path.rmdir()
            return False
        self.tablespace = path
        _give_to_postgres(path)

        async def move() -> None:
            await self.execute(f"CREATE TABLESPACE small LOCATION '{path}'")
            await self.execute(
                "ALTER TABLE ALL IN TABLESPACE pg_default SET TABLESPACE small;"
                "ALTER INDEX ALL IN TABLESPACE pg_default SET TABLESPACE small;",
                database="rampart",
            )

        asyncio.run(move())
        return True

    def fill_tablespace(self) -> Path:
        """Write a file until the tablespace's filesystem is full (ENOSPC); remove it to free the space."""
        assert self.tablespace is not None
        filler = self.tablespace / "filler"
        chunk = b"\0" * (1 << 20)
        with filler.open("wb", buffering=0) as out:
            with contextlib.suppress(OSError):  # ENOSPC: full now
                while True:
                    out.write(chunk)
            with contextlib.suppress(OSError):  # the last partial megabyte too
                for _ in range(1024):
                    out.write(b"\0" * 1024)
        return filler

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        if self.tablespace is not None:
            subprocess.run(
                ["umount", "-l", str(self.tablespace)], capture_output=True, timeout=WAIT, check=False
            )
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server of our own on a free port, in memory only; stop() and start() keep the port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT
        while not self.ping():
            assert self.proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)

    def ping(self) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def keys(self, pattern: str) -> list[bytes]:
        client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            return list(client.scan_iter(match=pattern, count=1000))
        finally:
            client.close()

    def calls(self) -> int:
        """Scripts run since this server started (the rate limiter runs one per request)."""
        client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=WAIT)
        self.proc = None


@dataclass
class Receiver:
    """A webhook receiver on loopback: it verifies each signature as the events guide says and keeps the
    event ids it was handed (at least once: duplicates are expected and counted)."""

    url: str = ""
    event_ids: set[str] = field(default_factory=set)
    deliveries: int = 0
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> set[str]:
        with self.lock:
            return set(self.event_ids)


def _signed(header: str, body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    expected = hmac.new(WEBHOOK_SECRET.encode(), f"{parts.get('t', '')}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.deliveries += 1
                if _signed(self.headers.get("X-Rampart-Signature", ""), body):
                    state.event_ids.add(self.headers.get("X-Rampart-Event-Id", ""))
                else:
                    state.bad_signatures += 1
            self.reply(204)

    with serving(Handler) as port:
        state.url = f"http://127.0.0.1:{port}/hook"
        yield state


def workers(supervisor: int) -> set[int]:
    """The worker processes of `rampart serve --workers N` (the supervisor's children, less
    multiprocessing's resource tracker)."""
    children: set[int] = set()
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            children |= {int(pid) for pid in (task / "children").read_text().split()}
    out = set()
    for pid in children:
        with contextlib.suppress(FileNotFoundError):
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.add(pid)
    return out


def wait_for_workers(
    supervisor: int, count: int, *, gone: set[int] | None = None, timeout: float = WAIT
) -> set[int]:
    """Wait (bounded) until the supervisor has `count` workers, none of them in `gone`."""
    gone = gone or set()
    deadline = time.monotonic() + timeout
    while len(now := workers(supervisor)) != count or now & gone:
        assert time.monotonic() < deadline, f"workers {now}, expected {count} without {gone}"
        time.sleep(0.05)
    return now


@dataclass
class Stack:
    """Everything one fault run needs, started: private PostgreSQL and Redis, `rampart serve --workers 2`
    against them, a webhook receiver subscribed to `tasks.*`, and an admin and a user with tokens."""

    pg: PrivatePostgres
    redis: PrivateRedis
    server: Server
    hooks: Receiver
    database_url: str
    admin_token: str
    user_token: str
    disk_full_possible: bool
    killed: list[int] = field(default_factory=list)  # workers killed on purpose

    @property
    def url(self) -> str:
        return self.server.url

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.user_token}"}


# Long enough for a soak: the load would otherwise get 401s once the default 15-minute token expires.
TOKEN_TTL = 86_400


async def _token(app: Rampart, role: str) -> str:
    """A new user of `role` with a live session (a day long); its access token."""
    services = app.services
    row = await services.managers["users"].create(
        Context(actor=system_actor(frozenset({"users:manage"}))),
        {"email": f"u{uuid.uuid4().hex[:16]}@example.test", "name": f"reliability {role}", "role": role},
    )
    async with services.db.transaction() as conn:
        pair = await open_session(
            conn, services.tokens, user_id=uuid.UUID(row["id"]), role=role, session_ttl=TOKEN_TTL
        )
    return pair.access_token


async def _users(database_url: str) -> tuple[str, str]:
    app = create_app(make_settings(database_url, access_token_ttl=TOKEN_TTL))
    try:
        return await _token(app, "admin"), await _token(app, "user")
    finally:
        await app.aclose()


# The settings of the served instance: real limits off (the load is one user), a short delivery lease and
# webhook timeout (a crashed worker's deliveries come back in seconds), private receivers allowed.
SERVE_ENV = {
    "RAMPART_RATE_LIMIT": "100000000/minute",
    "RAMPART_WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "true",
    "RAMPART_WEBHOOKS_TIMEOUT": "2",
    "RAMPART_EVENTS_LEASE": "3",
    "RAMPART_EVENTS_POLL_INTERVAL": "1",
    "RAMPART_DB_CONNECT_TIMEOUT": "2",
    "RAMPART_DB_POOL_TIMEOUT": "3",
    "RAMPART_LOG_FORMAT": "json",
}


@contextmanager
def stack(
    workdir: Path, *, workers_count: int = 2, small_tablespace: bool = True, **env: str
) -> Iterator[Stack]:
    """Start everything (about 5 s); stop and remove everything afterwards, whatever happened."""
    with ExitStack() as stop:
        pg = PrivatePostgres()
        stop.callback(pg.destroy)
        pg.init()
        pg.start()
        database_url = pg.create_database()
        disk_full_possible = small_tablespace and pg.mount_small_tablespace()
        redis = PrivateRedis()
        stop.callback(redis.stop)
        redis.start()
        hooks = stop.enter_context(receiver())
        admin_token, user_token = asyncio.run(_users(database_url))
        server = stop.enter_context(
            serve(
                database_url,
                workdir,
                workers=workers_count,
                name="rampart",
                **{"RAMPART_REDIS_URL": redis.url, **SERVE_ENV, **env},
            )
        )
        wait_for_workers(server.proc.pid, workers_count)
        made = httpx.post(
            f"{server.url}/api/v1/admin/webhooks",
            json={"url": hooks.url, "events": ["tasks.*"], "secret": WEBHOOK_SECRET},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        yield Stack(pg, redis, server, hooks, database_url, admin_token, user_token, disk_full_possible)


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def marker() -> str:
    """A prefix no other run uses: every row a run writes carries it."""
    return f"f{uuid.uuid4().hex[:10]}"
