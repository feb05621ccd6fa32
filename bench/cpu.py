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


def foreign_cores(
    before: dict[int, Proc], after: dict[int, Proc], seconds: float, ours: set[int], databases: set[str]
) -> tuple[float, list[str]]:
    """Average cores used by other work between two snapshots, and the top consumers."""
    mine = descendants(after, {os.getpid()}) | ours
    used: list[tuple[float, str]] = []
    for pid, p in after.items():
        if pid in mine:
            continue
        cpu = p.cpu_s - (before[pid].cpu_s if pid in before else 0.0)
        if cpu < 0.05:
            continue
        if p.name.startswith("postgres:") or p.name.startswith("/usr/lib/postgresql"):
            parts = p.name.split()
            # "postgres: 15/main: <user> <database> <client> <state>"; aux processes have no client
            if len(parts) < 5 or "(" not in p.name or parts[3] in databases:
                continue
        used.append((cpu, f"{p.name[:60]} ({cpu:.1f} s)"))
    used.sort(reverse=True)
    total = sum(c for c, _ in used)
    return (total / seconds if seconds > 0 else 0.0), [d for _, d in used[:3]]
