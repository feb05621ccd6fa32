"""How much CPU other work took during a measurement (from /proc).

On a 2-core machine anything else running (a test suite, another server, a build) eats
straight into the figures. A run records the CPU used by processes that are not part of
the benchmark: not this process and its children (wrk, pgbench), not the server under test,
not PostgreSQL's own processes or its backends for the benchmark's databases. Backends of
other databases count as other work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    name: str
    cpu_s: float


def snapshot() -> dict[int, Proc]:
    procs: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        head, rest = stat.rsplit(")", 1)
        fields = rest.split()
        name = title.strip() or head.split("(", 1)[1]
        procs[int(entry)] = Proc(
            pid=int(entry),
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            name=name,
            cpu_s=(int(fields[11]) + int(fields[12])) / _TICKS,
        )
    return procs


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests while this machine's CPUs wanted it ("steal" in
    /proc/stat), summed over the CPUs since boot; 0 outside a virtual machine."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (
        int(fields[8]) / _TICKS if len(fields) > 8 else 0.0
    )  # cpu user nice system idle iowait irq softirq steal


def descendants(procs: dict[int, Proc], roots: set[int]) -> set[int]:
    out = set(roots)
    changed = True
    while changed:
        changed = False
        for p in procs.values():
            if p.pid not in out and p.ppid in out:
                out.add(p.pid)
                changed = True
    return out


def listener_pids(port: int) -> set[int]:
    """Processes holding the socket that listens on 127.0.0.1:``port`` (the server under test)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[1].endswith(f":{port:04X}"):  # 0A: LISTEN
                inodes.add(cols[9])
    pids: set[int] = set()
    if not inodes:
        return pids
    targets = {f"socket:[{i}]" for i in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in targets:
                    pids.add(int(entry))
                    break
        except OSError:
            continue
    return pids


def node_pids(procs: dict[int, Proc], port: int) -> set[int]:
    """Every process of the PostgreSQL server listening on ``port`` (private: bench/citus_compare.py)."""
    return descendants(procs, listener_pids(port))


def server_pids(procs: dict[int, Proc], root_pid: int | None = None, port: int | None = None) -> set[int]:
    """The server's processes: its process tree, found from its pid or its listening port
    (then the whole process group of the listener, e.g. a cluster primary and its workers)."""
    roots: set[int] = set()
    if root_pid is not None:
        roots.add(root_pid)
    if port is not None:
        owners = listener_pids(port)
        groups = {procs[p].pgid for p in owners if p in procs}
        roots |= owners | {p.pid for p in procs.values() if p.pgid in groups}
    return descendants(procs, roots)


def _is_ours_postgres(p: Proc, postmasters: set[int], databases: set[str]) -> bool:
    """A process of the benchmark's PostgreSQL server that works for the benchmark: the
    postmaster, its auxiliary processes (checkpointer, WAL writer, ...) and the backends and
    autovacuum workers of the bench databases. Backends of other databases are other work."""
    if p.pid in postmasters:
        return True
    if p.ppid not in postmasters:
        return False
    words = p.name.split()
    if databases & set(words):
        return True
    is_backend = any("(" in w or w == "[local]" for w in words) or "autovacuum worker" in p.name
    return not is_backend


def foreign_cores(
    before: dict[int, Proc],
    after: dict[int, Proc],
    seconds: float,
    ours: set[int],
    databases: set[str],
    pg_port: int | None = 5432,
) -> tuple[float, list[str]]:
    """Average cores used by other work between two snapshots, and the top consumers.

    Not other work: this process and its children, ``ours`` (the server), the benchmark's
    PostgreSQL processes (see _is_ours_postgres) and kernel threads (their CPU is mostly the
    I/O the benchmark itself causes). Processes that ended before ``after`` are not seen.
    """
    mine = descendants(after, {os.getpid()}) | ours
    postmasters = listener_pids(pg_port) if pg_port else set()
    used: list[tuple[float, str]] = []
    for pid, p in after.items():
        if pid in mine or pid == 2 or p.ppid == 2:  # 2: kthreadd, parent of all kernel threads
            continue
        cpu = p.cpu_s - (before[pid].cpu_s if pid in before else 0.0)
        if cpu < 0.05 or _is_ours_postgres(p, postmasters, databases):
            continue
        used.append((cpu, f"{p.name[:60]} ({cpu:.1f} s)"))
    used.sort(reverse=True)
    total = sum(c for c, _ in used)
    return (total / seconds if seconds > 0 else 0.0), [d for _, d in used[:3]]


def cpu_seconds(before: dict[int, Proc], after: dict[int, Proc], pids: set[int]) -> float:
    """CPU time the processes ``pids`` used between two snapshots."""
    return sum(after[p].cpu_s - (before[p].cpu_s if p in before else 0.0) for p in pids if p in after)


def database_backends(procs: dict[int, Proc], databases: set[str], pg_port: int | None = 5432) -> set[int]:
    """PostgreSQL backends working for ``databases`` (their process title names the database)."""
    postmasters = listener_pids(pg_port) if pg_port else set()
    return {p.pid for p in procs.values() if p.ppid in postmasters and databases & set(p.name.split())}
