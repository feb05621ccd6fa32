"""The faults, and one driver that runs any of them under load: load until some writes are acknowledged,
inject the fault, hold it while the load goes on, heal it, wait until writes are acknowledged again
(without restarting Rampart), stop the load, then reconcile the ledger with the database and the webhook
receiver. Used by tests/reliability (small loads, in CI) and verify/faults.py (larger ones).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from tests.reliability.load import (
    Ledger,
    Load,
    Reconciliation,
    new_project,
    percentile,
    reconcile,
    until,
    wait_delivered,
)
from tests.reliability.services import Stack, marker, wait_for_workers, workers


@dataclass
class Fault:
    name: str
    inject: Callable[[Stack], Any]
    heal: Callable[[Stack], Any]
    # A refused request stored nothing (Redis down, read-only, disk full). Not so for a server that
    # vanished mid-commit: its client never learnt the outcome.
    refusals_store_nothing: bool
    # Requests may die with the connection (a killed worker) instead of getting an answer.
    transport_errors: bool = False
    # The workers keep running through it (Rampart recovers by itself, no restart).
    same_workers: bool = True
    # What /health/ready names while the fault lasts (None: not checked).
    ready_names: str | None = None


def _sql(stack: Stack, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(stack.pg.admin_url, timeout=30)
        try:
            for statement in statements:  # ALTER SYSTEM may not share a transaction with anything
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _kill_a_worker(stack: Stack) -> None:
    victim = min(workers(stack.server.proc.pid))
    stack.killed.append(victim)
    os.kill(victim, signal.SIGKILL)


def _replaced(stack: Stack) -> None:
    wait_for_workers(stack.server.proc.pid, 2, gone=set(stack.killed))


def _fill(stack: Stack) -> None:
    stack.pg.fill_tablespace()


def _free(stack: Stack) -> None:
    assert stack.pg.tablespace is not None
    (stack.pg.tablespace / "filler").unlink()


FAULTS = {
    "postgres_restart": Fault(
        "postgres_restart",
        inject=lambda s: s.pg.stop("immediate"),  # a crash: no checkpoint, WAL replay at the start
        heal=lambda s: s.pg.start(),
        refusals_store_nothing=False,
        ready_names="database",
    ),
    "postgres_clean_restart": Fault(
        "postgres_clean_restart",
        inject=lambda s: s.pg.stop("fast"),  # what an operator's restart does: sessions ended, checkpoint
        heal=lambda s: s.pg.start(),
        refusals_store_nothing=False,
        ready_names="database",
    ),
    "redis_stop": Fault(
        "redis_stop",
        inject=lambda s: s.redis.stop(),
        heal=lambda s: s.redis.start(),
        refusals_store_nothing=True,
        ready_names="redis",
    ),
    "worker_sigkill": Fault(
        "worker_sigkill",
        inject=_kill_a_worker,
        heal=_replaced,
        refusals_store_nothing=False,
        transport_errors=True,
        same_workers=False,
    ),
    "read_only": Fault(
        "read_only",
        inject=lambda s: _sql(
            s, "ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"
        ),
        heal=lambda s: _sql(
            s,
            "SET default_transaction_read_only = off",
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ),
        refusals_store_nothing=True,
    ),
    "disk_full": Fault("disk_full", inject=_fill, heal=_free, refusals_store_nothing=True),
}
CI_FAULTS = ("postgres_restart", "redis_stop", "worker_sigkill", "read_only", "disk_full")


@dataclass
class FaultRun:
    """What one fault under load gave: the figures verify/faults.py records, the checks the tests assert."""

    fault: str
    writers: int
    readers: int
    hold_seconds: float
    outcomes: dict[str, int] = field(default_factory=dict)
    during: dict[str, int] = field(default_factory=dict)  # outcomes while the fault lasted
    refused_ms_p50: float = 0.0  # how fast a refusal came, while the fault lasted
    refused_ms_max: float = 0.0
    recovery_seconds: float = 0.0  # from healed to the first acknowledged write
    failed_after_recovery: dict[str, int] = field(default_factory=dict)  # refusals once writes succeed again
    ready_during: dict[str, Any] = field(default_factory=dict)
    workers_before: list[int] = field(default_factory=list)
    workers_after: list[int] = field(default_factory=list)
    unexpected_count: int = 0
    unexpected: list[str] = field(default_factory=list)
    unhandled_errors_logged: int = 0
    error_log: list[str] = field(default_factory=list)  # the server's error-level lines (first few)
    reconciliation: Reconciliation = field(default_factory=Reconciliation)
    undelivered: list[str] = field(default_factory=list)
    delivery_wait_seconds: float = 0.0
    duplicate_deliveries: int = 0
    bad_signatures: int = 0
    postgres_running_after: bool = True

    def failures(self, fault: Fault) -> list[str]:
        """Every way this run fell short (empty when it held)."""
        out = [f"{k}: {v}" for k, v in self.reconciliation.problems().items()]
        if self.undelivered:
            out.append(f"undelivered events: {self.undelivered}")
        if self.unexpected_count:
            out.append(f"{self.unexpected_count} unexpected answers: {self.unexpected[:10]}")
        if self.unhandled_errors_logged:
            out.append(f"{self.unhandled_errors_logged} unhandled errors logged")
        if not fault.transport_errors and any(k.endswith(" transport") for k in self.outcomes):
            out.append(f"connection errors: {self.outcomes}")
        bit = sum(n for k, n in self.during.items() if k.endswith((" 503", " transport")))
        if fault.name != "worker_sigkill" and not bit:
            out.append(f"the fault was not felt: {self.during}")
        if self.failed_after_recovery:  # recovered means recovered: not a 503 here and there afterwards
            out.append(f"failures after recovery: {self.failed_after_recovery}")
        if fault.same_workers and self.workers_before != self.workers_after:
            out.append(f"workers restarted: {self.workers_before} -> {self.workers_after}")
        if fault.ready_names and fault.ready_names not in self.ready_during.get("errors", ""):
            out.append(f"/health/ready during the fault: {self.ready_during}")
        if self.bad_signatures:
            out.append(f"{self.bad_signatures} webhook deliveries with a bad signature")
        if not self.postgres_running_after:
            out.append("PostgreSQL stopped")
        return out


async def _ready(url: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.get(f"{url}/health/ready")
    except httpx.TransportError as exc:
        return {"status": "transport", "errors": repr(exc)}
    body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
    return {"status": r.status_code, "errors": str(body.get("errors", "")), "checks": body.get("checks")}


async def run_fault(
    stack: Stack,
    fault: Fault,
    *,
    writers: int = 4,
    readers: int = 2,
    before: int = 30,
    hold: float = 2.0,
    after: int = 30,
    delivery_timeout: float = 30.0,
) -> FaultRun:
    """`fault` under a load of `writers` + `readers` clients: `before` acknowledged writes, the fault for
    `hold` seconds, healed, `after` more acknowledged writes; then everything checked."""
    run = FaultRun(fault.name, writers, readers, hold)
    log_offset = len(stack.server.output())
    deliveries_before, ids_before = stack.hooks.deliveries, len(stack.hooks.received())
    ledger = Ledger(marker())
    project = await new_project(stack.url, stack.user_token, ledger.marker)
    load = Load(stack.url, stack.user_token, project, ledger, writers=writers, readers=readers)
    run.workers_before = sorted(workers(stack.server.proc.pid))
    runner = asyncio.create_task(load.run())
    try:
        await until(lambda: len(ledger.changes) >= before, 60, "writes acknowledged before the fault")
        await asyncio.to_thread(fault.inject, stack)
        injected = time.monotonic()
        await asyncio.sleep(hold / 2)
        run.ready_during = await _ready(stack.url)
        await asyncio.sleep(hold / 2)
        healing = time.monotonic()
        await asyncio.to_thread(fault.heal, stack)
        healed = time.monotonic()
        await until(lambda: ledger.acks_since(healed) >= after, 60, "writes acknowledged after healing")
    finally:
        load.stop.set()
        await asyncio.wait_for(runner, timeout=60)
    during = [s for s in ledger.samples if injected <= s.at <= healing]
    run.during = dict(Counter(f"{s.kind} {s.outcome}" for s in during))
    refused = [s.seconds * 1000 for s in during if s.outcome == "503"]
    run.refused_ms_p50, run.refused_ms_max = percentile(refused, 0.5), max(refused, default=0.0)
    first_ack = min(
        (
            s.at
            for s in ledger.samples
            if s.at >= healed and s.outcome in ("200", "201") and s.kind in ("create", "patch")
        ),
        default=healed,
    )
    run.recovery_seconds = first_ack - healed
    # Requests sent after the service answered again (one sent before may still be answered after).
    run.failed_after_recovery = dict(
        Counter(
            f"{s.kind} {s.outcome}"
            for s in ledger.samples
            if s.at - s.seconds > first_ack and s.outcome in ("503", "transport")
        )
    )
    run.outcomes = dict(ledger.outcomes)
    run.unexpected_count, run.unexpected = ledger.unexpected_count, ledger.unexpected
    run.workers_after = sorted(workers(stack.server.proc.pid))
    run.postgres_running_after = stack.pg.running()
    run.reconciliation = await reconcile(
        ledger, stack.database_url, refusals_store_nothing=fault.refusals_store_nothing
    )
    run.undelivered, run.delivery_wait_seconds = await wait_delivered(
        ledger, stack.database_url, stack.hooks.received, delivery_timeout
    )
    new_ids = len(stack.hooks.received()) - ids_before
    run.duplicate_deliveries = stack.hooks.deliveries - deliveries_before - new_ids  # at least once: allowed
    run.bad_signatures = stack.hooks.bad_signatures
    log = stack.server.output()[log_offset:]
    run.unhandled_errors_logged = log.count("unhandled error")
    run.error_log = [line[:4000] for line in log.splitlines() if '"level":"error"' in line][:10]
    return run
