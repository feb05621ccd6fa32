"""The console's short history of the API's metrics: rates, error shares and p99 from counter readings."""

from __future__ import annotations

from rampart.ops.metrics_history import MetricsHistory, Totals, p99_of

BOUNDS = (0.001, 0.01, 0.1, float("inf"))


def test_p99_is_the_bound_of_the_bucket_that_holds_it() -> None:
    assert p99_of(BOUNDS, (0, 0, 0, 0)) is None
    assert p99_of(BOUNDS, (98, 100, 100, 100)) == 0.01  # 98 of 100 under 1 ms, the rest under 10 ms
    assert p99_of(BOUNDS, (99, 100, 100, 100)) == 0.001  # 99 of 100 under 1 ms: p99 is 1 ms at most
    assert p99_of(BOUNDS, (990, 1000, 1000, 1000)) == 0.001
    assert p99_of(BOUNDS, (0, 0, 0, 5)) == float("inf")


def test_points_are_the_differences_between_readings() -> None:
    readings = iter(
        [
            Totals(100.0, 0, 0, (), ()),  # no API request yet: no histogram
            Totals(110.0, 20, 1, BOUNDS, (10, 19, 20, 20)),
            Totals(120.0, 30, 1, BOUNDS, (10, 19, 30, 30)),
            Totals(125.0, 5, 0, BOUNDS, (5, 5, 5, 5)),  # a restarted worker: counters began again
            Totals(130.0, 11, 0, BOUNDS, (11, 11, 11, 11)),
        ]
    )
    history = MetricsHistory(lambda: next(readings), keep=10)
    for _ in range(5):
        history.sample()
    points = history.points()
    assert [p.per_minute for p in points] == [120.0, 60.0, 72.0]
    assert [round(p.error_rate, 3) for p in points] == [0.05, 0.0, 0.0]
    assert [p.p99 for p in points] == [0.1, 0.1, 0.001]


def test_a_failing_reading_is_skipped() -> None:
    def broken() -> Totals:
        raise RuntimeError("registry gone")

    history = MetricsHistory(broken)
    history.sample()
    assert history.points() == []
    assert history.latest() is None
