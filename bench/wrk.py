"""Run one wrk scenario and parse the JSON line its Lua ``done()`` prints."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRK_DIR = Path(__file__).resolve().parent / "wrk"
MARKER = "WRK_JSON "


@dataclass(frozen=True)
class Scenario:
    name: str
    script: str
    description: str
    ok_status: int
    unit: str = "req/s"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("get", "get.lua", "GET /api/v1/tasks/{id}", 200),
        Scenario(
            "list", "list.lua", "GET /api/v1/tasks?status=todo&priority[gte]=2&sort=-priority&limit=20", 200
        ),
        Scenario("patch", "patch.lua", 'PATCH /api/v1/tasks/{id} {"priority": n}', 200),
        Scenario("create", "create.lua", "POST /api/v1/tasks", 201, unit="tasks/s"),
    )
}


class WrkError(RuntimeError):
    """wrk failed to run or its script failed (no result line)."""


@dataclass
class WrkResult:
    scenario: str
    duration_s: float
    requests: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float | None]
    ok_status: int
    bytes_read: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # found by the harness's own checks
    warnings: list[str] = field(default_factory=list)  # e.g. other work used the CPUs meanwhile

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok(self) -> int:
        """Responses with the scenario's expected status (200, or 201 for create)."""
        return self.statuses.get(str(self.ok_status), 0)

    @property
    def ok_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    @property
    def unexpected(self) -> int:
        """Responses other than the expected status (a 2xx of the wrong kind counts too)."""
        return self.requests - self.ok

    @property
    def errors(self) -> int:
        """Socket errors (connect/read/write/timeout), which wrk does not count as responses."""
        return sum(v for k, v in self.socket_errors.items() if k != "status")

    @property
    def flagged(self) -> bool:
        return self.unexpected > 0 or self.errors > 0 or self.requests == 0 or bool(self.problems)

    def flag_reason(self) -> str:
        parts = []
        if self.requests == 0:
            parts.append("no responses")
        if self.unexpected:
            other = {k: v for k, v in sorted(self.statuses.items()) if k != str(self.ok_status)}
            parts.append(f"{self.unexpected} unexpected responses {other}")
        if self.errors:
            errs = {k: v for k, v in self.socket_errors.items() if v and k != "status"}
            parts.append(f"socket errors {errs}")
        parts.extend(self.problems)
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "ok": self.ok,
            "ok_rps": round(self.ok_rps, 1),
            "non_2xx": self.non_2xx,
            "unexpected": self.unexpected,
            "statuses": self.statuses,
            "socket_errors": self.socket_errors,
            "latency_ms": self.latency_ms,
            "bytes_read": self.bytes_read,
            "flagged": self.flagged,
            "flag_reason": self.flag_reason() if self.flagged else None,
            "warnings": self.warnings,
            **self.extra,
        }


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed (apt-get install -y wrk)")
    return path


def parse_output(scenario: Scenario, stdout: str) -> WrkResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise WrkError(f"wrk printed no result line for {scenario.name}; output:\n{stdout[-2000:]}")
    raw = json.loads(line[len(MARKER) :])
    lat = raw["latency_us"]
    latency_ms = {k: (None if v is None else round(v / 1000.0, 3)) for k, v in lat.items()}
    return WrkResult(
        scenario=scenario.name,
        duration_s=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        statuses={str(k): int(v) for k, v in raw["statuses"].items()},
        socket_errors={k: int(v) for k, v in raw["errors"].items()},
        latency_ms=latency_ms,
        ok_status=scenario.ok_status,
        bytes_read=raw["bytes"],
    )


def run_wrk(
    base_url: str,
    scenario: Scenario,
    data_file: Path,
    run_id: str,
    *,
    duration: float,
    threads: int = 2,
    connections: int = 64,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Run ``scenario`` for ``duration`` seconds against ``base_url``."""
    script = WRK_DIR / scenario.script
    cmd = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(script),
        base_url,
        "--",
        str(data_file),
        run_id,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=duration + 60)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration + 60:.0f} s") from exc
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr[-2000:]}{proc.stdout[-2000:]}")
    # A Lua error in a thread is printed on stderr while wrk carries on with default requests.
    if "PANIC" in proc.stderr or ".lua:" in proc.stderr or ".lua:" in proc.stdout.split(MARKER)[0]:
        raise WrkError(f"wrk script error for {scenario.name}: {proc.stderr[-2000:]}{proc.stdout[-1000:]}")
    return parse_output(scenario, proc.stdout)
