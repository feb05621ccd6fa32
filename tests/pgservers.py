"""Private database servers for the scaling tests: a PostgreSQL primary with streaming standbys, and
PgBouncer in transaction mode. Each runs from a temporary folder on free loopback ports and is stopped
and removed afterwards; every wait is bounded.

PostgreSQL and PgBouncer refuse to run as root, so as root they run as the `postgres` system user
(which Debian's packages create) and their folders are handed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tests.support import free_port

START_TIMEOUT = 30.0


def postgres_bin_dir() -> Path | None:
    """Debian's PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup), newest version first."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_basebackup").exists():
            return candidate
    return None


PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


def _service_user() -> dict[str, Any]:
    """subprocess arguments that drop root to `postgres`; nothing when not root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres"}


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _run(*args: str | Path) -> None:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, check=False, **_service_user()
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}\n{done.stderr}")


def _url(port: int, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


@dataclass
class Node:
    """One PostgreSQL server of the cluster."""

    bin_dir: Path
    data_dir: Path
    port: int
    log: Path

    def url(self, database: str = "postgres") -> str:
        return _url(self.port, database)

    def start(self) -> None:
        _run(
            self.bin_dir / "pg_ctl",
            "-D",
            self.data_dir,
            "-l",
            self.log,
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            _run(self.bin_dir / "pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "stop")


@dataclass
class Replication:
    """A primary and its streaming standbys; `database` is created on the primary and migrated."""

    bin_dir: Path
    root: Path
    primary: Node
    database: str
    standbys: list[Node] = field(default_factory=list)

    @property
    def primary_url(self) -> str:
        return self.primary.url(self.database)

    @property
    def standby_url(self) -> str:
        return self.standbys[0].url(self.database)

    def add_standby(self) -> Node:
        """A new standby from a base backup of the primary, started and streaming."""
        number = len(self.standbys) + 1
        node = Node(
            self.bin_dir, self.root / f"standby{number}", free_port(), self.root / f"standby{number}.log"
        )
        _run(
            self.bin_dir / "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            node.data_dir,
            "-R",  # standby.signal and primary_conninfo: a streaming standby of this primary
            "-X",
            "stream",
            "-c",
            "fast",
            "-N",  # no fsync of the copy: a throwaway test server
        )
        node.start()
        self.standbys.append(node)
        wait_streaming(node.url())
        return node

    def close(self) -> None:
        for node in [*self.standbys, self.primary]:
            with contextlib.suppress(Exception):
                node.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def replication(database: str = "rampart") -> Iterator[Replication]:
    """initdb a primary (wal_level=replica) on a free port, create `database`, and start one standby."""
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None, "PostgreSQL server binaries not found under /usr/lib/postgresql"
    root = _private_dir("rampart-replication-")
    primary = Node(bin_dir, root / "primary", free_port(), root / "primary.log")
    cluster = Replication(bin_dir, root, primary, database)
    try:
        # fsync off: a test server that is thrown away; wal_level replica and senders for the standbys.
        _initdb(primary, "fsync = off\nwal_level = replica\nmax_wal_senders = 10\nmax_connections = 200\n")
        primary.start()
        _sql(primary.url(), f'CREATE DATABASE "{database}"')
        yield cluster
    finally:
        cluster.close()


def _initdb(node: Node, conf: str) -> None:
    """A new data directory for `node` (loopback clients trusted), with `conf` appended to its settings."""
    _run(
        node.bin_dir / "initdb",
        "-D",
        node.data_dir,
        "-A",
        "trust",
        "-U",
        "postgres",
        "-N",
        "--no-instructions",
    )
    with (node.data_dir / "postgresql.conf").open("a") as file:
        file.write(conf)


def wait_streaming(url: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            if _sql(url, "SELECT EXISTS (SELECT 1 FROM pg_stat_wal_receiver)"):
                return
        time.sleep(0.05)
    raise AssertionError(f"the standby at {url} is not streaming after {timeout} s")


def _sql(url: str, sql: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


# ----- Citus -----------------------------------------------------------------------------------------

# Every node of a test cluster, tuned for a 2-core machine that runs other tests at the same time (and a
# single node the same way, for the benchmark's comparison: bench/citus_compare.py).
_NODE_CONF = """
fsync = off
# On, as PostgreSQL's default: an online shard move waits for the new placement to replay the source's WAL
# up to its *write* position (pg_current_wal_lsn), which an asynchronous commit may not have reached yet
# when it is acknowledged; with `off`, a write acknowledged just before the switch was lost with the old
# placement (2 runs in 10 of test_citus_ops.py's rebalance under load; decision 0024).
synchronous_commit = on
full_page_writes = off
shared_buffers = 32MB
max_connections = 200
"""
_CITUS_CONF = (
    "shared_preload_libraries = 'citus'\n"
    + _NODE_CONF
    + """
# Online shard moves (the rebalancer) copy with logical replication.
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
# Nodes reach each other on loopback; no certificates to generate at CREATE EXTENSION.
citus.node_conninfo = 'sslmode=disable'
# No reports to citusdata.com: the machine reaches only package registries.
citus.enable_statistics_collection = off
# 8 shards per distributed table (32 by default): DDL runs once per shard, and 4 per worker suffice to
# see rows spread and moved; a query that fans out opens at most 2 connections per worker.
citus.shard_count = 8
citus.max_adaptive_executor_pool_size = 2
"""
)


@contextlib.contextmanager
def single_node(database: str = "rampart") -> Iterator[Node]:
    """One private PostgreSQL server tuned as the Citus nodes are, without Citus, `database` created."""
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None, "PostgreSQL server binaries not found under /usr/lib/postgresql"
    root = _private_dir("rampart-single-")
    node = Node(bin_dir, root / "node", free_port(), root / "node.log")
    try:
        _initdb(node, _NODE_CONF)
        node.start()
        _sql(node.url(), f'CREATE DATABASE "{database}"')
        yield node
    finally:
        with contextlib.suppress(Exception):
            node.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def citus_missing() -> str | None:
    """Why a Citus cluster cannot be started here, or None when it can."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql (Debian's postgresql package)"
    done = subprocess.run(
        [str(bin_dir / "pg_config"), "--pkglibdir"], capture_output=True, text=True, timeout=10, check=False
    )
    if done.returncode != 0 or not (Path(done.stdout.strip()) / "citus.so").exists():
        return (
            f"Citus is not installed for {bin_dir.parent.name} (run ../shared/citus/build.sh; .ci/run does)"
        )
    return None


@dataclass
class CitusCluster:
    """A Citus coordinator and its workers. Each database of the cluster exists on every node with the
    extension created and the workers registered (Citus keeps its node list per database)."""

    bin_dir: Path
    root: Path
    coordinator: Node
    database: str
    workers: list[Node] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The coordinator's database: what Rampart connects to."""
        return self.coordinator.url(self.database)

    def create_database(self, name: str) -> str:
        """Another database of the cluster (on every node, workers registered); returns its URL."""
        for node in [self.coordinator, *self.workers]:
            _with_extension(node, name)
        url = self.coordinator.url(name)
        # The coordinator in the metadata too: local tables on it may then reference reference tables,
        # and it holds a copy of them.
        _sql(url, f"SELECT citus_set_coordinator_host('127.0.0.1', {self.coordinator.port})")
        for node in self.workers:
            _sql(url, f"SELECT citus_add_node('127.0.0.1', {node.port})")
        self.databases.append(name)
        return url

    def add_worker(self) -> Node:
        """A new worker, started and added to the cluster (it holds no shards until a rebalance)."""
        node = _citus_node(self.bin_dir, self.root, f"worker{len(self.workers) + 1}")
        for name in self.databases:
            _with_extension(node, name)
            _sql(self.coordinator.url(name), f"SELECT citus_add_node('127.0.0.1', {node.port})")
        self.workers.append(node)
        return node

    def close(self) -> None:
        for node in [*self.workers, self.coordinator]:
            with contextlib.suppress(Exception):
                node.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _citus_node(bin_dir: Path, root: Path, name: str) -> Node:
    node = Node(bin_dir, root / name, free_port(), root / f"{name}.log")
    _initdb(node, _CITUS_CONF)
    node.start()
    return node


def _with_extension(node: Node, database: str) -> None:
    _sql(node.url(), f'CREATE DATABASE "{database}"')
    _sql(node.url(database), "CREATE EXTENSION citus")


@contextlib.contextmanager
def citus_cluster(workers: int = 2, database: str = "rampart") -> Iterator[CitusCluster]:
    """A coordinator and `workers` workers on free loopback ports, each its own initdb'd server, and
    `database` on all of them."""
    reason = citus_missing()
    assert reason is None, reason
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    root = _private_dir("rampart-citus-")
    cluster = CitusCluster(
        bin_dir, root, Node(bin_dir, root / "coordinator", 0, root / "coordinator.log"), database
    )
    try:
        cluster.coordinator = _citus_node(bin_dir, root, "coordinator")
        for number in range(1, workers + 1):
            cluster.workers.append(_citus_node(bin_dir, root, f"worker{number}"))
        cluster.create_database(database)
        yield cluster
    finally:
        cluster.close()


# ----- PgBouncer -------------------------------------------------------------------------------------


@dataclass
class Bouncer:
    port: int
    database: str
    pool_size: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return _url(self.port, self.database)

    def admin(self, command: str) -> list[dict[str, str]]:
        """A `SHOW ...` of the admin console (simple query protocol only: psql, not asyncpg)."""
        done = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "pgbouncer",
             "-A", "-F", "\t", "-P", "footer=off", "-c", command],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        lines = done.stdout.strip().splitlines()
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


@contextlib.contextmanager
def pgbouncer(target_url: str, *, pool_size: int = 3) -> Iterator[Bouncer]:
    """Debian's PgBouncer in transaction mode on a free port, in front of `target_url`'s database.

    Clients connect to it as database "rampart"; it opens at most `pool_size` server connections.
    """
    assert PGBOUNCER is not None, "pgbouncer is not installed (.ci/run installs it)"
    target = urlsplit(target_url)
    root = _private_dir("rampart-pgbouncer-")
    port = free_port()
    conf = root / "pgbouncer.ini"
    log = root / "pgbouncer.log"
    conf.write_text(
        "[databases]\n"
        f"rampart = host={target.hostname} port={target.port or 5432} dbname={target.path.lstrip('/')}"
        f" user={target.username or 'postgres'} pool_size={pool_size}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = any\n"  # the test server trusts loopback; every client is `postgres`
        "admin_users = postgres\n"
        "pool_mode = transaction\n"
        "max_client_conn = 500\n"
        f"default_pool_size = {pool_size}\n"
        f"logfile = {log}\n"
    )
    if os.geteuid() == 0:
        os.chown(conf, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    proc = subprocess.Popen(
        [PGBOUNCER, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **_service_user()
    )
    bouncer = Bouncer(port, "rampart", pool_size, proc, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"pgbouncer exited: {log.read_text() if log.exists() else ''}"
            try:
                _sql(bouncer.url, "SELECT 1")
                break
            except (OSError, asyncpg.PostgresError):
                assert time.monotonic() < deadline, "pgbouncer did not accept connections"
                time.sleep(0.05)
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


# ----- replay control (async: for use inside the tests' event loop) -------------------------------------


async def _fetchval(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def pause_replay(standby_url: str) -> None:
    """Stop the standby applying WAL (it still receives it), and wait until it has stopped."""
    await _fetchval(standby_url, "SELECT pg_wal_replay_pause()")
    deadline = time.monotonic() + 10
    while await _fetchval(standby_url, "SELECT pg_get_wal_replay_pause_state()") != "paused":
        assert time.monotonic() < deadline, "replay did not pause"
        await asyncio.sleep(0.01)


async def resume_replay(standby_url: str) -> None:
    await _fetchval(standby_url, "SELECT pg_wal_replay_resume()")


async def wait_caught_up(primary_url: str, standby_url: str, timeout: float = 10.0) -> None:
    """Wait until the standby has replayed everything the primary had written when this was called."""
    target = await _fetchval(primary_url, "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + timeout
    while not await _fetchval(standby_url, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
        assert time.monotonic() < deadline, f"the standby did not reach {target} in {timeout} s"
        await asyncio.sleep(0.01)
