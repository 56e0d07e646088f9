"""The outbox of callbacks (`deliveries`): claimed a few at a time, so a supervisor that
dies mid-delivery leaves each row to be tried again once its hold runs out (at least once,
with the same delivery id), each run's in the order they happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tui_agent.store.protocols import Delivery
from tui_agent.store.txn import locking

# A run's callbacks arrive in the order they happened: one waits while an earlier one of
# its run is still pending (being retried, or held by another deliverer).
_DUE = (
    "SELECT id, run_id, url, body, attempts, created_at FROM deliveries d "
    "WHERE status = 'pending' AND next_at <= ? AND NOT EXISTS (SELECT 1 FROM deliveries e "
    "WHERE e.run_id = d.run_id AND e.status = 'pending' "
    "AND (e.created_at < d.created_at OR (e.created_at = d.created_at AND e.id < d.id))) "
    "ORDER BY next_at LIMIT ?"
)


class OutboxStore:
    def __init__(self, db: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.now = clock

    def claim_due(self, limit: int, hold_s: float) -> list[Delivery]:
        """Deliveries due now, held for `hold_s` (another deliverer skips them meanwhile)."""
        now = self.now()
        with self.db.raw_read() as cur:  # most rounds find nothing: no write lock for that
            due = cur.execute(
                "SELECT 1 FROM deliveries WHERE status = 'pending' AND next_at <= ? LIMIT 1",
                (now,),
            ).fetchone()
        if due is None:
            return []
        with self.db.raw_write() as cur:
            skip = " SKIP LOCKED" if locking(cur) else ""
            rows = cur.execute(_DUE + locking(cur) + skip, (now, limit)).fetchall()
            for row in rows:
                cur.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, next_at = ? WHERE id = ?",
                    (now + hold_s, row["id"]),
                )
        return [
            Delivery(r["id"], r["run_id"], r["url"], r["body"], r["attempts"] + 1, r["created_at"])
            for r in rows
        ]

    def delivered(self, delivery_id: str) -> None:
        with self.db.raw_write() as cur:
            cur.execute(
                "UPDATE deliveries SET status = 'delivered', delivered_at = ?, last_error = NULL "
                "WHERE id = ?",
                (self.now(), delivery_id),
            )

    def attempt_failed(self, delivery_id: str, error: str, retry_at: float | None) -> None:
        """Try again at `retry_at`; None: give up (the row stays, `failed`, with the error)."""
        with self.db.raw_write() as cur:
            if retry_at is None:
                cur.execute(
                    "UPDATE deliveries SET status = 'failed', last_error = ? WHERE id = ?",
                    (error[:500], delivery_id),
                )
            else:
                cur.execute(
                    "UPDATE deliveries SET next_at = ?, last_error = ? WHERE id = ?",
                    (retry_at, error[:500], delivery_id),
                )

    def next_due(self) -> float | None:
        """When the next pending delivery is due (None: nothing pending)."""
        with self.db.raw_read() as cur:
            row = cur.execute(
                "SELECT min(next_at) FROM deliveries WHERE status = 'pending'"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])
