"""Charts of a results JSON (PNG, matplotlib's Agg backend: no display needed).

    .venv/bin/python bench/chart.py bench/results/20261126T083810Z.json   # -> ...083810Z.png

compare results: req/s and p99 per scenario, Express and Rampart side by side (the bars' whiskers
span the rounds' min-max rate). scale results: rate and p99 against the table size, one line
per side and worker count. matplotlib comes with the ``bench`` extra
(``pip install -e '.[bench]'``; ``make bench`` installs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCENARIO_ORDER = ("get", "list", "patch", "create")
COLORS = {"express": "#8c8c8c", "rampart": "#1f77b4"}
LABELS = {"express": "Express (reference)", "rampart": "Rampart"}


class ChartUnavailable(RuntimeError):
    """matplotlib is not installed (the ``bench`` extra)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ChartUnavailable(
            "matplotlib is not installed: .venv/bin/pip install -e '.[bench]' (make bench does it)"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_path(results: Path) -> Path:
    return results.with_suffix(".png")


def conditions(payload: dict[str, Any]) -> str:
    cfg = payload.get("config", {})
    parts = [f"{cfg.get('rounds', '?')} round(s) x {cfg.get('duration_s', 0):g} s"]
    short = cfg.get("duration_s", 0) < 15
    if payload.get("kind") == "scale" and short:
        parts.append("short runs")
    elif payload.get("kind") != "scale" and (short or cfg.get("rounds", 0) < 3):
        parts.append("quick")
    if payload.get("disturbed"):
        parts.append("DISTURBED")
    if payload.get("flags"):
        parts.append("FLAGGED")
    if payload.get("error"):
        parts.append("cut short")
    return ", ".join(parts)


def compare_chart(payload: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    summary: dict[str, dict[str, Any]] = payload.get("summary", {})
    sides = [s for s in ("express", "rampart") if s in summary]
    names = [n for n in SCENARIO_ORDER if any(n in summary[s] for s in sides)]
    fig, (ax_rate, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.6))
    width = 0.8 / max(1, len(sides))
    for i, side in enumerate(sides):
        xs = [k + (i - (len(sides) - 1) / 2) * width for k in range(len(names))]
        rows = [summary[side].get(n) for n in names]
        rates = [r["rate"] if r else 0 for r in rows]
        lo = [(r["rate"] - r["rate_min"]) if r else 0 for r in rows]
        hi = [(r["rate_max"] - r["rate"]) if r else 0 for r in rows]
        p99 = [(r["p99_ms"] or 0) if r else 0 for r in rows]
        bars = ax_rate.bar(
            xs, rates, width, color=COLORS[side], label=LABELS[side], yerr=[lo, hi], capsize=3, ecolor="#444"
        )
        ax_rate.bar_label(bars, labels=[f"{v:,.0f}" for v in rates], fontsize=8, padding=2)
        bars = ax_p99.bar(xs, p99, width, color=COLORS[side], label=LABELS[side])
        ax_p99.bar_label(bars, labels=[f"{v:.0f}" for v in p99], fontsize=8, padding=2)
    for ax in (ax_rate, ax_p99):
        ax.set_xticks(range(len(names)), names)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.margins(y=0.15)
    ax_rate.set_title("throughput (higher is better)")
    ax_rate.set_ylabel("expected-status responses / s (create: tasks / s)")
    ax_p99.set_title("p99 latency (lower is better)")
    ax_p99.set_ylabel("ms")
    ax_rate.legend(loc="upper right", fontsize=8)
    cfg = payload.get("config", {})
    fig.suptitle(
        f"Rampart vs Express, {payload.get('started_at', '')}: {conditions(payload)}; "
        f"wrk {cfg.get('threads', 2)}x{cfg.get('connections', 64)}, {cfg.get('workers', 2)} workers each",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def scale_chart(payload: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    points: list[dict[str, Any]] = payload.get("points", [])
    names = [n for n in SCENARIO_ORDER if any(n in p["summary"] for p in points)]
    fig, axes = plt.subplots(2, max(1, len(names)), figsize=(3.6 * max(1, len(names)), 6.4), squeeze=False)
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in points:
        series.setdefault((p["side"], p["workers"]), []).append(p)
    styles = {1: ":", 2: "-", 4: "--"}
    for col, name in enumerate(names):
        for (side, workers), pts in sorted(series.items()):
            pts = sorted((p for p in pts if name in p["summary"]), key=lambda p: p["tasks"])
            xs = [p["tasks"] for p in pts]
            kw = {"color": COLORS.get(side, "k"), "linestyle": styles.get(workers, "-."), "marker": "o"}
            label = f"{side} {workers}w"
            axes[0][col].plot(xs, [p["summary"][name]["rate"] for p in pts], label=label, **kw)
            axes[1][col].plot(xs, [p["summary"][name]["p99_ms"] or 0 for p in pts], label=label, **kw)
        axes[0][col].set_title(name)
        for row in (0, 1):
            axes[row][col].set_xscale("log")
            axes[row][col].grid(alpha=0.3)
            axes[row][col].set_ylim(bottom=0)
        axes[1][col].set_xlabel("tasks in the table")
    axes[0][0].set_ylabel("req/s (create: tasks/s)")
    axes[1][0].set_ylabel("p99 ms")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Scale curve, {payload.get('started_at', '')}: {conditions(payload)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_chart(payload: dict[str, Any], results: Path) -> Path:
    """The PNG next to ``results`` (same name, .png)."""
    out = png_path(results)
    if payload.get("kind") == "scale":
        return scale_chart(payload, out)
    return compare_chart(payload, out)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for arg in argv:
        path = Path(arg)
        print(write_chart(json.loads(path.read_text()), path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
