"""Fault injection under load (issue 7): for each fault, a bounded load loop of writers and readers runs
against `rampart serve --workers 2` on a private PostgreSQL and Redis; the fault is injected mid-load,
held, healed; then what was acknowledged is compared with what is stored, row by row, and every
acknowledged change's event must have reached the webhook receiver.

The long version, with bigger loads and a summary, is `make verify-faults` (verify/faults.py).
"""

from __future__ import annotations

import pytest

from tests.reliability.faults import CI_FAULTS, FAULTS, run_fault
from tests.reliability.services import Stack


@pytest.mark.parametrize("name", CI_FAULTS)
async def test_a_fault_under_load_loses_no_acknowledged_write(faults_stack: Stack, name: str) -> None:
    fault = FAULTS[name]
    if name == "disk_full" and not faults_stack.disk_full_possible:
        pytest.skip("disk full needs root and a tmpfs mount for the tablespace; not possible here")
    run = await run_fault(faults_stack, fault, writers=4, readers=2, before=30, hold=2.0, after=20)

    assert run.reconciliation.acknowledged_changes >= 50  # the load did run, before and after
    assert run.reconciliation.missing == []  # no acknowledged write is missing
    assert run.reconciliation.wrong == []  # each stored row is its last acknowledged state
    assert run.undelivered == []  # each acknowledged change's event reached the receiver
    assert run.unexpected == []
    assert run.unhandled_errors_logged == 0
    assert run.failures(fault) == []  # and the rest: no stale read, one event per change, readiness, ...
    if name == "redis_stop":  # the limiter uses the restarted Redis again, not some per-worker fallback
        assert faults_stack.redis.calls() >= 20
