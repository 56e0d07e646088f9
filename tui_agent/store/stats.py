"""Figures over the whole store, for `stats --json`, `GET /v1/stats` and `/metrics`.

Computed from the tables at each ask, never kept in a process: two servers on one shared
store, or one server after a restart, say the same."""

from __future__ import annotations

from typing import Any

from tui_agent.domain.models import FINAL_STATUSES

_FINAL = tuple(s.value for s in FINAL_STATUSES)
_FINAL_SQL = ", ".join(f"'{s}'" for s in _FINAL)
# Seconds: a run of the demo takes a few; a real agent minutes to hours.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


def _spread(values: list[float]) -> dict[str, float | None]:
    """p50, p95 and max (nearest rank); None each when there is nothing to measure."""
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 4)

    return {"p50": rank(0.50), "p95": rank(0.95), "max": round(ordered[-1], 4)}


def _latency_sql(dialect: str) -> str:
    if dialect == "postgresql":
        value = "(payload_json::json ->> 'latency_s')::float"
    else:
        value = "json_extract(payload_json, '$.latency_s')"
    return f"SELECT {value} AS v FROM steps WHERE kind = 'llm' AND payload_json LIKE '%latency_s%'"


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
        latencies = _column(cur, _latency_sql(reader.db.dialect) + " AND created_at >= ?", t)
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
