"""Figures over the whole store, for `stats --json`, `GET /v1/stats` and `/metrics`.

Computed from the tables at each ask, never kept in a process: two servers on one shared
store, or one server after a restart, say the same."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tui_agent.domain.models import FINAL_STATUSES

_FINAL = tuple(s.value for s in FINAL_STATUSES)
_FINAL_SQL = ", ".join(f"'{s}'" for s in _FINAL)
# Seconds: a run of the demo takes a few; a real agent minutes to hours.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
# Seconds a model took to answer: the demo answers at once, a real model in seconds.
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
RUN_POINTS = 120  # a run's progress is cut into at most this many points, however long
LATENCY_RUNS = 500  # LLM latency is measured over the replies of the newest runs only


def _spread(values: list[float]) -> dict[str, float | None]:
    """How many values, their p50, p95 and max (nearest rank); None each when there is
    nothing to measure."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 4)

    return {"n": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "max": round(ordered[-1], 4)}


def _latency_value(dialect: str) -> str:
    """An LLM step's latency in seconds, read from its payload's JSON."""
    if dialect == "postgresql":
        return "(payload_json::json ->> 'latency_s')::float"
    return "json_extract(payload_json, '$.latency_s')"


# A reply measured in its own run: a fork's copies keep their first run's times (older than
# the fork), and the one call to the model must not be counted once per copy.
_OWN_REPLY = (
    "kind = 'llm' AND payload_json LIKE '%latency_s%' "
    "AND steps.created_at >= (SELECT r.created_at FROM runs r WHERE r.id = steps.run_id)"
)


def _latency_sql(dialect: str) -> str:
    value = _latency_value(dialect)
    return f"SELECT {value} AS v FROM steps WHERE {_OWN_REPLY}"


def _counts(cur: Any, column: str, table: str, since: float) -> dict[str, int]:
    rows = cur.execute(
        f"SELECT {column} AS k, count(*) AS n FROM {table} WHERE created_at >= ? GROUP BY {column}",
        (since,),
    )
    return {row["k"]: int(row["n"]) for row in rows.fetchall()}


def _value(cur: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return cur.execute(sql, params).fetchone()["v"]


def _column(cur: Any, sql: str, params: tuple[Any, ...] = ()) -> list[float]:
    rows = cur.execute(sql, params).fetchall()
    return [float(row["v"]) for row in rows if row["v"] is not None]


def store_stats(reader: Any, since: float | None = None) -> dict[str, Any]:
    """The shape of `stats --json` (product.md, Command line); with `since` (epoch
    seconds), only what was created from then on (runs, steps, events, approvals)."""
    t = (since or 0.0,)
    with reader.snapshot() as cur:
        runs = _counts(cur, "status", "runs", t[0])
        steps = _counts(cur, "kind", "steps", t[0])
        tokens = _value(
            cur, "SELECT coalesce(sum(usage_tokens), 0) AS v FROM runs WHERE created_at >= ?", t
        )
        durations = _column(
            cur,
            "SELECT updated_at - created_at AS v FROM runs "
            f"WHERE status IN ({_FINAL_SQL}) AND created_at >= ?",
            t,
        )
        latencies = _column(cur, _latency_sql(reader.db.dialect) + " AND steps.created_at >= ?", t)
        retries = _value(
            cur, "SELECT count(*) AS v FROM events WHERE kind = 'retry' AND created_at >= ?", t
        )
        approvals = _counts(cur, "status", "approvals", t[0])
        waits = _column(
            cur,
            "SELECT decided_at - created_at AS v FROM approvals "
            "WHERE status IN ('approved', 'denied') AND decided_at IS NOT NULL "
            "AND created_at >= ?",
            t,
        )
        callbacks = _counts(cur, "status", "deliveries", t[0])
    waits.sort()
    return {
        "runs": runs,
        "steps": steps,
        "llm_tokens": int(tokens),
        "run_duration_s": _spread([max(0.0, d) for d in durations]),
        "llm_latency_s": _spread(latencies),
        "retries": int(retries),
        "approvals": {
            "pending": approvals.get("pending", 0),
            "approved": approvals.get("approved", 0),
            "denied": approvals.get("denied", 0),
            "median_time_to_decide_s": round(waits[len(waits) // 2], 3) if waits else None,
        },
        "callbacks": {s: callbacks.get(s, 0) for s in ("pending", "delivered", "failed")},
    }


def metric_figures(reader: Any) -> dict[str, Any]:
    """What `/metrics` exposes: counts, sums and the duration histogram's buckets."""
    buckets = ", ".join(
        f"sum(CASE WHEN updated_at - created_at <= {b!r} THEN 1 ELSE 0 END) AS b{i}"
        for i, b in enumerate(DURATION_BUCKETS)
    )
    with reader.snapshot() as cur:
        runs = _counts(cur, "status", "runs", 0.0)
        steps = _counts(cur, "kind", "steps", 0.0)
        tokens = _value(cur, "SELECT coalesce(sum(usage_tokens), 0) AS v FROM runs")
        retries = _value(cur, "SELECT count(*) AS v FROM events WHERE kind = 'retry'")
        pending = _value(cur, "SELECT count(*) AS v FROM approvals WHERE status = 'pending'")
        hist = cur.execute(
            f"SELECT count(*) AS n, coalesce(sum(updated_at - created_at), 0) AS total, "
            f"{buckets} FROM runs WHERE status IN ({_FINAL_SQL})"
        ).fetchone()
        callbacks = _counts(cur, "status", "deliveries", 0.0)
    return {
        "runs": runs,
        "steps": steps,
        "llm_tokens": int(tokens),
        "retries": int(retries),
        "approvals_pending": int(pending),
        "duration_buckets": [
            (bound, int(hist[f"b{i}"] or 0)) for i, bound in enumerate(DURATION_BUCKETS)
        ],
        "duration_count": int(hist["n"]),
        "duration_sum": float(hist["total"]),
        "callbacks": callbacks,
    }


def day_starts(now: float, days: int) -> list[float]:
    """The local midnights that start `days` days up to today's, oldest first (so a bar is
    a day as the person lives it, DST included)."""
    today = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return [(today - timedelta(days=back)).timestamp() for back in range(days - 1, -1, -1)]


def _upper_bucket(value: str, bounds: tuple[float, ...]) -> str:
    """A CASE giving the index of the first bound `value` is at most (len(bounds) above)."""
    whens = " ".join(f"WHEN {value} <= ? THEN {i}" for i in range(len(bounds)))
    return f"CASE {whens} ELSE {len(bounds)} END"


def _histogram(rows: list[Any], size: int) -> list[int]:
    counts = [0] * size
    for row in rows:
        counts[int(row["b"])] += int(row["n"])
    return counts


def _run_points(cur: Any, run_id: str) -> list[tuple[float, int, int]]:
    """(seconds since the run was created, budget steps so far, tokens so far), from its
    first step to its last, in at most RUN_POINTS points: steps are grouped by seq."""
    run = cur.execute("SELECT created_at, next_seq FROM runs WHERE id = ?", (run_id,)).fetchone()
    if run is None:
        return []
    width = max(1, -(-(int(run["next_seq"]) - 1) // RUN_POINTS))
    rows = cur.execute(
        "SELECT b, max(created_at) AS t, sum(counted) AS steps, sum(tokens) AS tokens FROM ("
        "SELECT (seq - 1) / CAST(? AS INTEGER) AS b, created_at, tokens, "
        "CASE WHEN kind IN ('llm', 'tool') THEN 1 ELSE 0 END AS counted "
        "FROM steps WHERE run_id = ?) s GROUP BY b ORDER BY b",
        (width, run_id),
    ).fetchall()
    points, steps, tokens = [(0.0, 0, 0)], 0, 0
    for row in rows:
        steps, tokens = steps + int(row["steps"]), tokens + int(row["tokens"])
        points.append((max(0.0, float(row["t"]) - float(run["created_at"])), steps, tokens))
    return points


def stats_series(reader: Any, starts: list[float], run_id: str | None = None) -> dict[str, Any]:
    """What the TUI's statistics screen plots, over the runs created from `starts[0]` on
    (`starts`: each day's first second, oldest first, from `day_starts`). Every figure is
    aggregated by the database and bounded whatever the store holds: a histogram of final
    runs' durations, one of LLM latency (the replies of the newest LATENCY_RUNS runs), runs
    per day and status, and `run_id`'s progress in at most RUN_POINTS points."""
    since = starts[0]
    latency = _latency_value(reader.db.dialect)
    with reader.snapshot() as cur:
        durations = cur.execute(
            f"SELECT b, count(*) AS n FROM (SELECT "
            f"{_upper_bucket('(updated_at - created_at)', DURATION_BUCKETS)} AS b FROM runs "
            f"WHERE status IN ({_FINAL_SQL}) AND created_at >= ?) d GROUP BY b",
            (*DURATION_BUCKETS, since),
        ).fetchall()
        latencies = cur.execute(
            f"SELECT b, count(*) AS n FROM (SELECT {_upper_bucket('v', LATENCY_BUCKETS)} AS b "
            f"FROM (SELECT {latency} AS v FROM steps WHERE {_OWN_REPLY} "
            "AND run_id IN (SELECT id FROM runs "
            "WHERE created_at >= ? ORDER BY created_at DESC LIMIT ?)) r "
            "WHERE v IS NOT NULL) l GROUP BY b",
            (*LATENCY_BUCKETS, since, LATENCY_RUNS),
        ).fetchall()
        newest_first = list(enumerate(starts))[::-1]
        day = "CASE " + " ".join(f"WHEN created_at >= ? THEN {i}" for i, _ in newest_first)
        per_day = cur.execute(
            f"SELECT b, status, count(*) AS n FROM (SELECT {day} ELSE 0 END AS b, status "
            "FROM runs WHERE created_at >= ?) d GROUP BY b, status",
            (*(start for _, start in newest_first), since),
        ).fetchall()
        points = _run_points(cur, run_id) if run_id else []
    by_status: dict[str, list[int]] = {}
    for row in per_day:
        by_status.setdefault(row["status"], [0] * len(starts))[int(row["b"])] += int(row["n"])
    return {
        "run": {"id": run_id, "points": points} if run_id else None,
        "run_duration_s": {
            "bounds": list(DURATION_BUCKETS),
            "counts": _histogram(durations, len(DURATION_BUCKETS) + 1),
        },
        "llm_latency_s": {
            "bounds": list(LATENCY_BUCKETS),
            "counts": _histogram(latencies, len(LATENCY_BUCKETS) + 1),
        },
        "runs_per_day": {"days": list(starts), "by_status": by_status},
    }
