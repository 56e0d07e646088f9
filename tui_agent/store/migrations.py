"""Named schema migrations, applied in order on open and recorded in `schema_migrations`.

Each migration's SQL is frozen history: never edit one that has shipped, add the next.
A database newer than the last migration here is refused, never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tui_agent.domain.errors import StoreError
from tui_agent.store.postgres_schema import PG_MIGRATIONS, is_postgres, pg_has_meta

# A DB-API cursor inside the caller's write transaction (either engine's).
Cursor = Any


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Cursor], None]


def run_sql(script: str) -> Callable[[Cursor], None]:
    def apply(cur: Cursor) -> None:
        for statement in script.split(";"):
            if statement.strip():
                cur.execute(statement)

    return apply


_V1 = """
CREATE TABLE meta ("key" VARCHAR NOT NULL PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE schema_migrations (
    version INTEGER NOT NULL PRIMARY KEY, name VARCHAR NOT NULL, applied_at FLOAT NOT NULL);
CREATE TABLE runs (
    id VARCHAR NOT NULL PRIMARY KEY, idem_key VARCHAR, status VARCHAR NOT NULL,
    goal VARCHAR NOT NULL, workspace VARCHAR NOT NULL, model VARCHAR NOT NULL, base_url VARCHAR,
    budget_json VARCHAR NOT NULL, policy_json VARCHAR NOT NULL, state_json VARCHAR NOT NULL,
    usage_steps INTEGER NOT NULL, usage_tokens INTEGER NOT NULL, usage_wall_s FLOAT NOT NULL,
    result VARCHAR, error VARCHAR, pause_reason VARCHAR, cancel_requested BOOLEAN NOT NULL,
    owner VARCHAR, owner_pid INTEGER, lease_until FLOAT, lost_at FLOAT,
    retry_attempt INTEGER NOT NULL, retry_max INTEGER NOT NULL, retry_at FLOAT,
    retry_error VARCHAR, next_seq INTEGER NOT NULL, revision INTEGER NOT NULL,
    created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL);
CREATE INDEX ix_runs_owner ON runs (owner);
CREATE INDEX ix_runs_status_created ON runs (status, created_at, id);
CREATE INDEX ix_runs_created ON runs (created_at, id);
CREATE UNIQUE INDEX ux_runs_live_key ON runs (idem_key)
    WHERE idem_key IS NOT NULL AND status NOT IN ('completed','failed','cancelled');
CREATE TABLE steps (
    run_id VARCHAR NOT NULL REFERENCES runs (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    kind VARCHAR NOT NULL, status VARCHAR NOT NULL, tool VARCHAR, call_id VARCHAR,
    arguments VARCHAR, result VARCHAR, artifact_id VARCHAR, llm_seq INTEGER,
    payload_json VARCHAR NOT NULL, tokens INTEGER NOT NULL, created_at FLOAT NOT NULL,
    finished_at FLOAT, PRIMARY KEY (run_id, seq));
CREATE TABLE approvals (
    id VARCHAR NOT NULL PRIMARY KEY,
    run_id VARCHAR NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    llm_seq INTEGER NOT NULL, call_id VARCHAR NOT NULL, tool VARCHAR NOT NULL,
    arguments VARCHAR NOT NULL, args_hash VARCHAR NOT NULL, risk VARCHAR NOT NULL,
    model_reason VARCHAR NOT NULL, status VARCHAR NOT NULL, created_at FLOAT NOT NULL,
    decided_at FLOAT, decided_by VARCHAR, decision_reason VARCHAR, always BOOLEAN NOT NULL);
CREATE INDEX ix_approvals_run_status ON approvals (run_id, status);
CREATE TABLE artifacts (
    id VARCHAR NOT NULL PRIMARY KEY,
    run_id VARCHAR NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, size INTEGER NOT NULL, summary VARCHAR NOT NULL,
    content BLOB NOT NULL, created_at FLOAT NOT NULL);
CREATE INDEX ix_artifacts_run ON artifacts (run_id);
CREATE TABLE events (
    id INTEGER NOT NULL PRIMARY KEY,
    run_id VARCHAR NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind VARCHAR NOT NULL, message VARCHAR NOT NULL, data_json VARCHAR NOT NULL,
    created_at FLOAT NOT NULL);
CREATE INDEX ix_events_run ON events (run_id, id);
"""

# v2: the history pane flags runs that wait for a tool approval without a join, and the
# supervisor registers its executor processes so `supervisor status` can list them.
_V2 = """
ALTER TABLE runs ADD COLUMN waiting_tool VARCHAR;
CREATE TABLE executors (
    pid INTEGER NOT NULL PRIMARY KEY, supervisor_pid INTEGER NOT NULL,
    started_at FLOAT NOT NULL, heartbeat_at FLOAT NOT NULL);
"""

# v3: substring search of goals through a trigram index, so filtering the history by text
# never scans every run (statements listed one by one: the triggers contain semicolons).
_V3 = (
    "CREATE VIRTUAL TABLE runs_fts USING fts5(goal, content='runs', content_rowid='rowid', "
    "tokenize='trigram')",
    "INSERT INTO runs_fts (rowid, goal) SELECT rowid, goal FROM runs",
    "CREATE TRIGGER runs_fts_ai AFTER INSERT ON runs BEGIN "
    "INSERT INTO runs_fts (rowid, goal) VALUES (new.rowid, new.goal); END",
    "CREATE TRIGGER runs_fts_ad AFTER DELETE ON runs BEGIN "
    "INSERT INTO runs_fts (runs_fts, rowid, goal) VALUES ('delete', old.rowid, old.goal); END",
    "CREATE TRIGGER runs_fts_au AFTER UPDATE OF goal ON runs BEGIN "
    "INSERT INTO runs_fts (runs_fts, rowid, goal) VALUES ('delete', old.rowid, old.goal); "
    "INSERT INTO runs_fts (rowid, goal) VALUES (new.rowid, new.goal); END",
)


# v4: which runs an executor holds (`supervisor status`, the TUI's status bar every 2 s,
# freeing a dead executor's runs) was a scan of every run; only held runs are indexed.
_V4 = """
CREATE INDEX ix_runs_owner_pid ON runs (owner_pid) WHERE owner_pid IS NOT NULL;
"""


def _run_script(script: str) -> Callable[[Cursor], None]:
    """The whole script in one go (PostgreSQL runs several statements, functions too)."""

    def apply(cur: Cursor) -> None:
        cur.execute(script)

    return apply


def _run_statements(statements: tuple[str, ...]) -> Callable[[Cursor], None]:
    def apply(cur: Cursor) -> None:
        for statement in statements:
            cur.execute(statement)

    return apply


# v5: a shared store. Runs carry the queue that may execute them, the fencing epoch of the
# lease (it grows with every claim; a step commits only under the epoch it was claimed
# with) and the machine holding them; executors are named by machine and pid.
_V5 = """
ALTER TABLE runs ADD COLUMN queue VARCHAR NOT NULL DEFAULT 'default';
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN owner_node VARCHAR;
ALTER TABLE executors ADD COLUMN node VARCHAR NOT NULL DEFAULT ''
"""

# v6: callbacks. A run may name a URL to be told when it ends or needs a person; each such
# moment is a row of the outbox (`deliveries`), written in the transaction that made it.
_V6 = """
ALTER TABLE runs ADD COLUMN callback_url VARCHAR;
CREATE TABLE deliveries (
    id VARCHAR NOT NULL PRIMARY KEY,
    run_id VARCHAR NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    url VARCHAR NOT NULL, body VARCHAR NOT NULL, status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at FLOAT NOT NULL, last_error VARCHAR,
    created_at FLOAT NOT NULL, delivered_at FLOAT);
CREATE INDEX ix_deliveries_due ON deliveries (status, next_at);
CREATE INDEX ix_deliveries_run ON deliveries (run_id, created_at)
"""

# v7: bounded context. A run's requests start from its newest compaction: found through
# this small index whatever the number of steps (resume stays flat).
_V7 = """
CREATE INDEX ix_steps_compactions ON steps (run_id, seq) WHERE kind = 'compaction'
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", run_sql(_V1)),
    Migration(2, "waiting_tool_and_executors", run_sql(_V2)),
    Migration(3, "goal_trigram_search", _run_statements(_V3)),
    Migration(4, "held_runs_index", run_sql(_V4)),
    Migration(5, "queues_epochs_nodes", run_sql(_V5)),
    Migration(6, "callbacks", run_sql(_V6)),
    Migration(7, "compactions_index", run_sql(_V7)),
)
LATEST_VERSION = MIGRATIONS[-1].version
assert PG_MIGRATIONS[-1][0] == LATEST_VERSION, "both engines' schemas move together"


def current_version(cur: Cursor) -> int:
    """0 for an empty database (a plain cursor of either engine)."""
    if is_postgres(cur):
        has_meta = pg_has_meta(cur)
    else:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        has_meta = cur.execute(sql).fetchone() is not None
    if not has_meta:
        return 0
    row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return 0
    return int(row["value"] if isinstance(row, dict) else row[0])  # a reader's rows are dicts


def migrate(cur: Cursor, *, upto: int = LATEST_VERSION) -> list[str]:
    """Bring the schema to `upto` inside the caller's transaction; returns what was applied."""
    version = current_version(cur)
    if version > LATEST_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this tui-agent supports "
            f"({LATEST_VERSION}); upgrade tui-agent to open it"
        )
    steps = (
        [Migration(v, n, _run_script(sql)) for v, n, sql in PG_MIGRATIONS]
        if is_postgres(cur)
        else MIGRATIONS
    )
    applied: list[str] = []
    for migration in steps:
        if version < migration.version <= upto:
            migration.apply(cur)
            cur.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            cur.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(migration.version),),
            )
            applied.append(migration.name)
    return applied
