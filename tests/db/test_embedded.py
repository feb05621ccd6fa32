"""The embedded PostgreSQL: start, connect, share between handles and processes, refuse unsafe folders.

One data folder is initialised once per module (initdb takes most of the ~0.7 s cold start); each
test then starts the server on it (~0.15 s) and stops it again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url

from rampart.db.embedded import EmbeddedPostgres, default_data_dir


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    # Under /var/tmp rather than pytest's tmp_path: as root, pgserver makes every parent folder
    # world-readable, and pytest's /tmp/pytest-of-root is private on purpose.
    root = Path(tempfile.mkdtemp(prefix="rampart-embedded-", dir="/var/tmp"))
    pgdata = root / "pgdata"
    try:
        yield pgdata
    finally:
        _kill_leftover_server(pgdata)
        shutil.rmtree(root)


def _kill_leftover_server(pgdata: Path) -> None:
    """Only reached when a test failed between start() and stop()."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # PostgreSQL's fast shutdown
    for _ in range(50):
        if not pid_file.exists():
            return
        time.sleep(0.1)


def _is_running(pgdata: Path) -> bool:
    return (pgdata / "postmaster.pid").exists()


def _holders(pgdata: Path) -> list[int]:
    pids: list[int] = json.loads((pgdata / ".handle_pids.json").read_text() or "[]")
    return pids


async def test_start_connect_and_stop(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    began = time.perf_counter()
    dsn = server.start()
    print(f"embedded PostgreSQL started in {time.perf_counter() - began:.2f} s")
    try:
        assert dsn.startswith(f"postgresql://postgres@/rampart?host={data_dir}&port=")
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("select 1") == 1
            assert await conn.fetchval("select current_database()") == "rampart"
            assert await conn.fetchval("select inet_server_addr()") is None  # a Unix socket, no TCP
        finally:
            await conn.close()
    finally:
        server.stop()
    assert not _is_running(data_dir)


def test_start_is_idempotent_and_handles_share_one_server(data_dir: Path) -> None:
    first, second = EmbeddedPostgres(data_dir), EmbeddedPostgres(data_dir)
    with first as dsn:
        postmaster = (data_dir / "postmaster.pid").read_text()
        assert first.start() == dsn
        assert second.start() == dsn
        assert (data_dir / "postmaster.pid").read_text() == postmaster
        second.stop()
        assert _is_running(data_dir), "the first handle still holds the server"
    assert not _is_running(data_dir)
    first.stop()  # stopping twice is harmless


def test_another_process_joins_and_leaves_without_stopping_it(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as dsn:
        joiner = (
            "import sys; from pathlib import Path; from rampart.db.embedded import EmbeddedPostgres;"
            f"e = EmbeddedPostgres(Path({str(data_dir)!r})); print(e.start()); e.stop()"
        )
        done = subprocess.run([sys.executable, "-c", joiner], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == dsn
        assert _is_running(data_dir)
        assert _holders(data_dir) == [os.getpid()]
    assert not _is_running(data_dir)


def test_a_holder_that_died_does_not_keep_the_server_up(data_dir: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    server = EmbeddedPostgres(data_dir)
    server.start()
    holders = data_dir / ".handle_pids.json"
    holders.write_text(json.dumps([dead.pid, *_holders(data_dir)]))
    server.stop()
    assert not _is_running(data_dir)
    assert _holders(data_dir) == []


def test_sqlalchemy_takes_the_dsn_with_the_asyncpg_scheme() -> None:
    dsn = "postgresql://postgres@/rampart?host=/var/lib/rampart/pgdata&port=5432"
    url = make_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    assert PGDialect_asyncpg().create_connect_args(url) == (
        [],
        {"user": "postgres", "database": "rampart", "host": "/var/lib/rampart/pgdata", "port": 5432},
    )


@pytest.mark.parametrize("folder", ["/root/pgdata", "/root/app/.rampart/pgdata", "/home/alice/pgdata"])
def test_refuses_a_home_folder_as_root(monkeypatch: pytest.MonkeyPatch, folder: str) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(ValueError, match=r"^The embedded database folder .* readable by all users"):
        EmbeddedPostgres(Path(folder))


def test_refuses_a_symlink_into_a_home_folder_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as scratch:
        link = Path(scratch) / "data"
        link.symlink_to("/root")
        with pytest.raises(ValueError, match=r"^The embedded database folder /root/pgdata is inside /root:"):
            EmbeddedPostgres(link / "pgdata")


def test_refuses_a_folder_too_long_for_a_unix_socket() -> None:
    with pytest.raises(ValueError, match="too long for a Unix socket"):
        EmbeddedPostgres(Path(tempfile.gettempdir()) / ("x" * 90) / "pgdata")


@pytest.mark.parametrize(
    ("euid", "expected"),
    [(0, Path("/var/lib/rampart/pgdata")), (1000, Path("/srv/app/.rampart/pgdata"))],
)
def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, euid: int, expected: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    assert default_data_dir(project_dir=Path("/srv/app")) == expected
