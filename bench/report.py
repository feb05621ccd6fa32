"""Medians over rounds, ratios, and the printed tables."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from wrk import SCENARIOS, WrkResult

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def loadavg() -> float:
    """The 1-minute load average: anything else running skews a 2-core benchmark."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def summarize(rounds: list[dict[str, WrkResult]]) -> dict[str, dict[str, Any]]:
    """Per scenario: medians over rounds of the good-response rate and latencies, totals of errors.

    ``rate`` counts only responses with the expected status (200, or 201 for create), so error
    responses never inflate it; runs with any other response or socket error are flagged.
    """
    out: dict[str, dict[str, Any]] = {}
    names = [n for n in SCENARIOS if any(n in r for r in rounds)]
    for name in names:
        runs = [r[name] for r in rounds if name in r]
        rates = [r.ok_rps for r in runs]
        p50 = [r.latency_ms["p50"] for r in runs if r.latency_ms["p50"] is not None]
        p99 = [r.latency_ms["p99"] for r in runs if r.latency_ms["p99"] is not None]
        out[name] = {
            "unit": SCENARIOS[name].unit,
            "rate": round(statistics.median(rates), 1),
            "rate_min": round(min(rates), 1),
            "rate_max": round(max(rates), 1),
            "rps_all_responses": round(statistics.median(r.rps for r in runs), 1),
            "p50_ms": round(statistics.median(p50), 3) if p50 else None,
            "p99_ms": round(statistics.median(p99), 3) if p99 else None,
            "rounds": len(runs),
            "non_2xx": sum(r.non_2xx for r in runs),
            "unexpected": sum(r.unexpected for r in runs),
            "socket_errors": sum(r.errors for r in runs),
            "flagged_rounds": sum(1 for r in runs if r.flagged),
            "disturbed_rounds": sum(1 for r in runs if r.warnings),
            "other_work_cores_max": max((r.extra.get("other_work_cores", 0.0) for r in runs), default=0.0),
        }
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def flag_mark(s: dict[str, Any]) -> str:
    return ("!" if s["flagged_rounds"] else "") + ("~" if s["disturbed_rounds"] else "")


def single_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"{'scenario':<9}{'rate':>10} {'unit':<8}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}"
    ]
    for name, s in summary.items():
        lines.append(
            f"{name:<9}{fmt_rate(s['rate']):>10} {s['unit']:<8}{fmt_ms(s['p50_ms']):>9}"
            f"{fmt_ms(s['p99_ms']):>9}{s['non_2xx']:>9}{s['socket_errors']:>9}"
            f" {flag_mark(s)}".rstrip()
        )
    return "\n".join(lines)


def comparison_table(sides: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Express and Rampart side by side with Rampart/Express ratios (rate: higher is better;
    p99: lower is better)."""
    ex, ra = sides.get("express", {}), sides.get("rampart", {})
    names = [n for n in SCENARIOS if n in ex or n in ra]
    head = (
        f"{'scenario':<9}{'unit':<9}| {'Express':>8} {'p50':>7} {'p99':>7} | {'Rampart':>8} {'p50':>7}"
        f" {'p99':>7} | {'R/E rate':>8} {'R/E p99':>8}"
    )
    lines = [head, "-" * len(head)]
    for name in names:
        e, r = ex.get(name), ra.get(name)
        unit = SCENARIOS[name].unit

        def cols(s: dict[str, Any] | None) -> str:
            if s is None:
                return f"{'-':>8} {'-':>7} {'-':>7}"
            return (
                f"{fmt_rate(s['rate']) + flag_mark(s):>8} {fmt_ms(s['p50_ms']):>7} {fmt_ms(s['p99_ms']):>7}"
            )

        rate_ratio = ratio(r["rate"], e["rate"]) if e and r else None
        p99_ratio = ratio(r["p99_ms"], e["p99_ms"]) if e and r else None
        lines.append(
            f"{name:<9}{unit:<9}| {cols(e)} | {cols(r)} | {fmt_ratio(rate_ratio):>8} "
            f"{fmt_ratio(p99_ratio):>8}"
        )
    lines.append(
        "rate: median over rounds of expected-status responses per second; p50/p99: medians, ms;\n"
        "! = a round had non-2xx/unexpected responses or socket errors; "
        "~ = other work used the CPUs during a round"
    )
    return "\n".join(lines)


def _version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": _version(["node", "--version"]),
        "wrk": _version(["wrk", "--version"]),
        "pgbench": _version(["pgbench", "--version"]),
    }


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_json(payload: dict[str, Any], out: Path | None, prefix: str = "") -> Path:
    path = out or RESULTS_DIR / f"{prefix}{timestamp()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
