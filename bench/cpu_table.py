"""CPU per answered request, server and database, per side and scenario, from a compare.py results file.

Unlike the rate, CPU per request hardly moves when other work shares the cores (it is how much work a
request took, not how long it waited), so it compares the two sides even on a busy machine.

    .venv/bin/python bench/cpu_table.py bench/results/<timestamp>.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def cpu_rows(results: dict[str, Any]) -> list[tuple[str, float, float, float, float]]:
    """(scenario, express server, express database, rampart server, rampart database): medians, us."""
    rows = []
    rounds = results["rounds"]
    for scenario in ("get", "list", "patch", "create"):
        values: list[float] = []
        for side in ("express", "rampart"):
            for key in ("server_cpu_us_per_request", "database_cpu_us_per_request"):
                found = [r[scenario].get(key) for r in rounds.get(side, []) if scenario in r]
                found = [v for v in found if v is not None]
                values.append(statistics.median(found) if found else float("nan"))
        rows.append((scenario, *values))  # type: ignore[arg-type]
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| scenario | Express server | Express database | Rampart server | Rampart database"
        " | Rampart / Express (sum) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario, es, ed, rs, rd in cpu_rows(results):
        ratio = (rs + rd) / (es + ed) if es + ed else float("nan")
        lines.append(
            f"| {scenario} | {es:,.0f} µs | {ed:,.0f} µs | {rs:,.0f} µs | {rd:,.0f} µs | {ratio:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
