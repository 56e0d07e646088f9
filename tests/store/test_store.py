"""The store against real SQLite files and a real PostgreSQL server (`both_stores`: the
conformance of the two engines): migrations, transactions, ownership, fencing."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from tui_agent.domain.errors import BadInput, LeaseLost, StoreError, UnknownRun
from tui_agent.domain.models import Budget, Policy, RunSpec, RunStatus, StepStatus
from tui_agent.store.db import make_engine
from tui_agent.store.journal import StepJournal
from tui_agent.store.migrations import LATEST_VERSION, migrate
from tui_agent.store.run_store import RunStore, open_store
from tui_agent.store.tables import metadata


def spec(**kw: object) -> RunSpec:
    base = {
        "goal": "g",
        "workspace": "/tmp",
        "model": "demo",
        "budget": Budget(),
        "policy": Policy(),
    }
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


@pytest.fixture
def store(store_target: Path | str) -> RunStore:
    s = open_store(store_target)
    yield s
    s.close()


both = pytest.mark.both_stores


def test_pragmas_are_wal_full_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "x.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    normal = make_engine(tmp_path / "y.db", synchronous="normal")
    with normal.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1


@both
def test_migrations_build_the_schema_the_tables_describe(store: RunStore, backend: str) -> None:
    db = store.db
    with db.read() as conn:
        insp = inspect(conn)
        for table in metadata.sorted_tables:
            cols = {c["name"] for c in insp.get_columns(table.name)}
            assert cols == {c.name for c in table.columns}, table.name
            indexes = {i["name"] for i in insp.get_indexes(table.name)}
            assert {i.name for i in table.indexes} <= indexes, table.name
        applied = conn.exec_driver_sql("SELECT name FROM schema_migrations").scalars().all()
    assert applied == (
        ["postgresql_initial", "callbacks", "compactions_index"]
        if backend == "postgres"
        else [
            "initial",
            "waiting_tool_and_executors",
            "goal_trigram_search",
            "held_runs_index",
            "queues_epochs_nodes",
            "callbacks",
            "compactions_index",
        ]
    )


def test_older_database_is_migrated_in_place_keeping_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("BEGIN")
        migrate(conn.cursor(), upto=1)
        conn.execute(
            "INSERT INTO runs (id, status, goal, workspace, model, budget_json, policy_json, "
            "state_json, usage_steps, usage_tokens, usage_wall_s, cancel_requested, "
            "retry_attempt, retry_max, next_seq, revision, created_at, updated_at) VALUES "
            "('ab12', 'paused', 'old goal', '/tmp', 'demo', '{}', '{}', '{}', 3, 10, 1.0, 0, "
            "0, 0, 4, 1, 1.0, 1.0)"
        )
        conn.execute("COMMIT")
    conn.close()
    store = open_store(path)
    run = store.get_run("ab12")
    assert run.goal == "old goal" and run.usage.steps == 3 and run.waiting_tool is None
    assert run.queue == "default" and run.epoch == 0
    with store.db.read() as conn:
        version = conn.exec_driver_sql("SELECT value FROM meta WHERE key='schema_version'").scalar()
    assert int(version) == LATEST_VERSION


def test_newer_schema_is_refused_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        open_store(path)


def test_foreign_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_text("hello")
    with pytest.raises(StoreError, match="not a tui-agent database"):
        open_store(path)
    assert path.read_text() == "hello"
    assert not (tmp_path / "x.db-wal").exists()


@both
def test_prefix_resolution(store: RunStore) -> None:
    run, _ = store.create_run(spec())
    assert store.resolve_id(run.id[:5]) == run.id
    with pytest.raises(UnknownRun):
        store.resolve_id("zz")
    with pytest.raises(BadInput, match="must not be empty"):
        store.resolve_id("")


def _start_with_key(path: str, queue: Any) -> None:
    """In its own process: start a run with the shared key; report (id, created) or the error."""
    try:
        s = open_store(path)
        run, created = s.create_run(spec(idem_key="same"))
        s.close()
        queue.put((run.id, created))
    except BaseException as exc:  # reported, never swallowed
        queue.put(("error", repr(exc)))


@both
def test_idempotency_key_is_unique_among_live_runs_under_concurrency(
    store_target: Path | str,
) -> None:
    """Eight processes start a run with one key at once: exactly one creates it, every other
    gets that run back, and none fails."""
    path = store_target
    open_store(path).close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_start_with_key, args=(str(path), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert not [r for r in results if r[0] == "error"], results
    assert len({run_id for run_id, _ in results}) == 1
    assert sum(1 for _, created in results if created) == 1


@both
def test_a_start_that_loses_the_key_race_at_insert_returns_the_winner(
    store_target: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unique index is the last line: a start whose check missed the live run (another
    engine's isolation, a racing writer) gets that run back, not an error."""
    import tui_agent.store.starts as starts

    store = open_store(store_target)
    winner, _ = store.create_run(spec(idem_key="k"))
    real = starts.live_run_with_key_txn
    calls = {"n": 0}

    def miss_first(conn: Any, key: str | None) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(conn, key)

    monkeypatch.setattr(starts, "live_run_with_key_txn", miss_first)
    again, created = store.create_run(spec(idem_key="k"))
    assert (again.id, created) == (winner.id, False)
    assert store.count_runs() == 1
    store.close()


@both
def test_a_step_commit_needs_the_lease(store: RunStore) -> None:
    run, _ = store.create_run(spec())
    a = StepJournal(store.db, "owner-a", 1)
    b = StepJournal(store.db, "owner-b", 2)
    assert a.claim(4, 30) == [run.id]
    assert b.claim(4, 30) == []  # a second executor cannot take a leased run
    with pytest.raises(LeaseLost):
        b.record_llm_reply(run.id, {"content": "x"}, 5, 0.0)
    assert store.steps(run.id) == []
    seq = a.record_llm_reply(run.id, {"content": "x"}, 5, 0.0)
    assert seq == 1 and store.get_run(run.id).usage.llm_tokens == 5


def test_a_run_thread_that_ends_closes_its_connection(store: RunStore) -> None:
    """An executor runs each run in its own thread for hours: connections must not pile up."""
    run, _ = store.create_run(spec())
    journal = StepJournal(store.db, "owner", 1)
    journal.claim(1, 30)

    def open_db_files() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if str(store.path) in str(fd.resolve(strict=False)))

    def one_run_thread() -> None:
        worker = threading.Thread(target=journal.record_llm_reply, args=(run.id, {}, 1, 0.0))
        worker.start()
        worker.join()

    # SQLite keeps one closed descriptor per file for reuse; after that, none may pile up.
    assert store.steps(run.id) == []
    one_run_thread()
    baseline = open_db_files()
    for _ in range(25):
        one_run_thread()
    assert len(store.steps(run.id)) == 26
    assert open_db_files() == baseline


@both
def test_expired_lease_can_be_claimed_and_old_owner_cannot_write(store: RunStore) -> None:
    run, _ = store.create_run(spec())
    a = StepJournal(store.db, "owner-a", 1)
    b = StepJournal(store.db, "owner-b", 2)
    a.claim(1, -1)  # a lease that has already run out
    assert b.claim(1, 30) == [run.id]
    with pytest.raises(LeaseLost):
        a.journal_tool_start(run.id, llm_seq=1, call_id="c", tool="t", arguments="{}", wall=0)


@both
def test_a_run_its_executor_still_advances_is_not_claimed_again(store: RunStore) -> None:
    run, _ = store.create_run(spec())
    a = StepJournal(store.db, "owner-a", 1)
    a.claim(1, -1)  # the lease ran out (a stalled heartbeat) while the run's thread works on
    assert a.claim(4, 30, working={run.id}) == []
    assert a.claim(4, 30) == [run.id]  # once that thread has ended it may be taken again


@both
def test_step_and_checkpoint_commit_together_or_not_at_all(store: RunStore) -> None:
    run, _ = store.create_run(spec())
    j = StepJournal(store.db, "o", 1)
    j.claim(1, 30)
    seq = j.journal_tool_start(run.id, llm_seq=1, call_id="c", tool="t", arguments="{}", wall=0)
    with store.db.raw_write() as cur:  # another step already holds the next seq: a clash
        cur.execute(
            "INSERT INTO steps (run_id, seq, kind, status, payload_json, tokens, created_at) "
            "VALUES (?, ?, 'llm', 'done', '{}', 0, 0)",
            (run.id, seq + 1),
        )
    before = store.get_run(run.id)
    with pytest.raises(Exception, match=r"UNIQUE|duplicate key"):
        j.record_llm_reply(run.id, {"content": "x"}, 7, 1.0)
    after = store.get_run(run.id)
    assert after.usage == before.usage and after.next_seq == before.next_seq
    assert store.step(run.id, seq).status is StepStatus.STARTED


def plan(store: RunStore, sql: str) -> str:
    """The engine's plan for a query. PostgreSQL's planner scans a small table whole, so
    scans are priced out there: the plan shows which index serves the query at scale."""
    with store.db.read() as conn:
        if store.db.dialect == "sqlite":
            return " ".join(str(r[3]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return " ".join(str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))


@both
def test_history_page_uses_an_index_not_a_scan(store: RunStore) -> None:
    found = plan(
        store,
        "SELECT id FROM runs WHERE status IN ('queued') ORDER BY created_at DESC, id DESC LIMIT 50",
    )
    assert "ix_runs_status_created" in found, found
    found = plan(store, "SELECT id FROM runs ORDER BY created_at DESC, id DESC LIMIT 50")
    assert "ix_runs_created" in found, found


@both
def test_held_runs_are_found_through_an_index(store: RunStore) -> None:
    """`supervisor status` and the TUI's status bar (every 2 s) must not scan every run."""
    for where in ("owner_pid IS NOT NULL", "owner_pid = 42"):
        found = plan(store, f"SELECT owner_pid, id FROM runs WHERE {where}")
        assert "ix_runs_owner_pid" in found, (where, found)


@both
def test_list_runs_pages_with_a_cursor(store: RunStore) -> None:
    ids = [store.create_run(spec(goal=f"goal {i}"))[0].id for i in range(7)]
    page1 = store.list_runs(limit=3)
    page2 = store.list_runs(limit=3, before=(page1[-1].created_at, page1[-1].id))
    page3 = store.list_runs(limit=3, before=(page2[-1].created_at, page2[-1].id))
    seen = [r.id for r in page1 + page2 + page3]
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    assert [r.goal for r in store.list_runs(text="goal 3")] == ["goal 3"]
    assert store.list_runs(text="50%_") == []


@both
def test_resume_refuses_a_still_spent_budget(store: RunStore) -> None:
    from tui_agent.domain.errors import BadInput

    run, _ = store.create_run(spec(budget=Budget(max_steps=1)))
    j = StepJournal(store.db, "o", 1)
    j.claim(1, 30)
    j.record_llm_reply(run.id, {"content": "x"}, 1, 0)
    j.finish_run(run.id, RunStatus.PAUSED, wall=0, message="paused", pause_reason="budget spent")
    with pytest.raises(BadInput, match="larger budget"):
        store.resume(run.id)
    assert store.resume(run.id, max_steps=5).status is RunStatus.QUEUED


@both
def test_text_filter_uses_the_trigram_index_for_rare_and_a_scan_for_common(
    store: RunStore,
) -> None:
    from tui_agent.store import reader as run_store

    for i in range(30):
        store.create_run(spec(goal=f"Fix README typo {i}" if i % 3 else f"Deploy service {i}"))
    assert len(store.list_runs(text="readme", limit=100)) == 20  # case-insensitive
    assert [r.goal for r in store.list_runs(text="service 27")] == ["Deploy service 27"]
    old = run_store.COMMON_MATCHES
    run_store.COMMON_MATCHES = 5  # force the 'common' plan: walk newest first
    try:
        common = store.list_runs(text="readme", limit=7)
    finally:
        run_store.COMMON_MATCHES = old
    assert len(common) == 7 and all("README" in r.goal for r in common)
    assert [r.goal for r in store.list_runs(text="ty")][:1] == ["Fix README typo 29"]
    assert store.list_runs(text='"; DROP') == []


@both
def test_a_writer_that_lost_its_lease_can_finish_nothing(store: RunStore) -> None:
    """The finish fence: an executor whose lease ran out and whose run another executor took
    cannot complete, fail or release that run, nor add anything to it."""
    run, _ = store.create_run(spec())
    a = StepJournal(store.db, "owner-a", 1)
    b = StepJournal(store.db, "owner-b", 2)
    assert a.claim(1, -1) == [run.id]  # taken, lease already run out
    assert b.claim(1, 30) == [run.id]  # so another executor takes it over
    events = len(store.events(run.id))
    with pytest.raises(LeaseLost):
        a.finish_run(run.id, RunStatus.COMPLETED, wall=1.0, message="done", result="stale")
    with pytest.raises(LeaseLost):
        a.journal_tool_start(
            run.id, llm_seq=1, call_id="c", tool="list_dir", arguments="{}", wall=0
        )
    after = store.get_run(run.id)
    assert after.status is RunStatus.RUNNING and after.owner == "owner-b" and after.result is None
    assert store.steps(run.id) == [] and len(store.events(run.id)) == events


@both
def test_claims_skip_locked_rows_and_every_claim_raises_the_epoch(store: RunStore) -> None:
    """Twenty runs, four executors claiming at once from threads: every run is taken by
    exactly one of them, each under epoch 1; a takeover after the lease ran out is epoch 2,
    and the old holder's writes are fenced off by it."""
    runs = [store.create_run(spec(goal=f"g{i}"))[0].id for i in range(20)]
    journals = [StepJournal(store.db, f"owner-{i}", 100 + i) for i in range(4)]
    taken: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def claim(j: StepJournal) -> None:
        barrier.wait()
        got: list[str] = []
        for _ in range(10):
            got += j.claim(2, 30)
        taken[j.owner] = got

    threads = [threading.Thread(target=claim, args=(j,)) for j in journals]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [r for got in taken.values() for r in got]
    assert sorted(every) == sorted(runs)  # each exactly once
    assert {store.get_run(r).epoch for r in runs} == {1}
    first = store.get_run(runs[0])
    holder = next(j for j in journals if j.owner == first.owner)
    with store.db.raw_write() as cur:  # its lease runs out
        cur.execute("UPDATE runs SET lease_until = 0 WHERE id = ?", (first.id,))
    thief = StepJournal(store.db, "owner-new", 200)
    assert first.id in thief.claim(20, 30)
    assert store.get_run(first.id).epoch == 2
    with pytest.raises(LeaseLost):
        holder.record_llm_reply(first.id, {"content": "stale"}, 1, 0.0)
    assert thief.record_llm_reply(first.id, {"content": "fresh"}, 1, 0.0) == 1


@both
def test_queues_pin_runs_to_the_executors_that_serve_them(store: RunStore) -> None:
    gpu, _ = store.create_run(spec(queue="gpu"))
    plain, _ = store.create_run(spec())
    default_only = StepJournal(store.db, "a", 1, queues=("default",))
    assert default_only.claim(10, 30) == [plain.id]
    gpu_only = StepJournal(store.db, "b", 2, queues=("gpu",))
    assert gpu_only.claim(10, 30) == [gpu.id]
    assert store.get_run(gpu.id).queue == "gpu"


@both
def test_a_dead_executors_runs_go_ahead_of_the_queue_and_past_the_free_places(
    store: RunStore,
) -> None:
    """A dead machine's runs were under way: a live executor takes them at once, even when
    its free places are taken, and before any queued run."""
    queued = [store.create_run(spec(goal=f"q{i}"))[0].id for i in range(3)]
    dead = StepJournal(store.db, "dead", 1)
    assert dead.claim(3, -1) == queued  # held, lease already run out: orphaned
    waiting = [store.create_run(spec(goal=f"w{i}"))[0].id for i in range(3)]
    live = StepJournal(store.db, "live", 2)
    assert live.claim(0, 30, orphans=2) == queued[:2]  # no free place: orphans only
    assert live.claim(1, 30, orphans=2) == [queued[2]]  # the last orphan fills the place
    assert live.claim(1, 30) == [waiting[0]]


def test_a_runs_columns_follow_its_domain_fields() -> None:
    """One definition of a run's fields (`Run`): its scalar fields, usage counters and JSON
    blobs are exactly the columns of the table (checked against both engines' schemas by
    `test_migrations_build_the_schema_the_tables_describe`)."""
    from tui_agent.store.rows import BLOB_NAMES, SUMMARY_NAMES
    from tui_agent.store.tables import runs_t

    assert set(SUMMARY_NAMES) | set(BLOB_NAMES) == {c.name for c in runs_t.columns}
    assert len(SUMMARY_NAMES) == len(set(SUMMARY_NAMES))


@both
def test_a_nul_in_a_goal_or_a_tool_result_is_stored_on_either_engine(store: RunStore) -> None:
    """A binary file read by a tool, a goal pasted with a NUL: PostgreSQL text cannot hold
    the byte (it is kept as U+FFFD there); the write never fails."""
    run, _ = store.create_run(spec(goal="find\x00me"))
    j = StepJournal(store.db, "o", 1)
    j.claim(1, 30)
    seq = j.journal_tool_start(run.id, llm_seq=1, call_id="c", tool="t", arguments="{}", wall=0)
    j.finish_tool(run.id, seq, status=StepStatus.FINISHED, result="bin\x00ary", wall=0.0)
    step = store.step(run.id, seq)
    assert step is not None and step.result in ("bin\x00ary", "bin\ufffdary")
    assert store.get_run(run.id).goal in ("find\x00me", "find\ufffdme")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_no_wait_on_postgresql_outlives_a_lease(store: RunStore, db_url: str) -> None:
    """Another session holds a run's row (a machine cut off mid-transaction): a heartbeat
    gives up within the session's lock timeout instead of hanging past the lease, so the
    executor's own fence and the takeover can happen on time."""
    import time

    import psycopg

    from tui_agent.domain.errors import StoreUnavailable

    run, _ = store.create_run(spec())
    j = StepJournal(store.db, "o", 1)
    assert j.claim(1, 30) == [run.id]
    holder = psycopg.connect(db_url)
    holder.execute("SELECT 1 FROM tui_agent.runs WHERE id = %s FOR UPDATE", (run.id,))
    began = time.monotonic()
    with pytest.raises(StoreUnavailable):
        j.heartbeat({run.id: 0.0}, 30)
    assert time.monotonic() - began < 5.0  # the store's timeout_s (5 s) bounds every wait
    holder.rollback()
    holder.close()
    assert j.heartbeat({run.id: 0.0}, 30) == {run.id: False}


@both
def test_stats_series_are_aggregated_by_the_database_on_either_engine(
    store_target: Path | str,
) -> None:
    """The statistics screen's figures: histograms, runs per local day and status, and one
    run's progress, each from a GROUP BY and bounded (a long run is cut into RUN_POINTS)."""
    from tui_agent.store import stats
    from tui_agent.store.reader import Reader

    now = [1_790_000_000.0]
    s = open_store(store_target, clock=lambda: now[0])
    starts = stats.day_starts(now[0], 3)
    assert len(starts) == 3 and starts[-1] <= now[0] < starts[-1] + 86400 + 3600
    j = StepJournal(s.db, "o", 1)

    def run_at(when: float, status: RunStatus | None, took: float, latencies: list[float]) -> str:
        now[0] = when
        run, _ = s.create_run(spec())
        assert j.claim(1, 10**6) == [run.id]
        for latency in latencies:
            payload = {"content": "x", "tool_calls": [], "latency_s": latency}
            j.record_llm_reply(run.id, payload, 100, 0.1)
        now[0] = when + took
        if status is not None:
            j.finish_run(run.id, status, wall=took, message=status.value)
        return run.id

    run_at(starts[0] - 60, RunStatus.COMPLETED, 2.0, [0.1])  # before the window: not counted
    first = run_at(starts[0] + 10, RunStatus.COMPLETED, 3.0, [0.2, 1.5])
    run_at(starts[2] + 10, RunStatus.FAILED, 100.0, [7.0])
    run_at(starts[2] + 20, RunStatus.COMPLETED, 90_000.0, [])
    run_at(starts[2] + 30, None, 0.0, [120.0])  # still running: no duration yet
    now[0] = starts[2] + 40
    data = stats.stats_series(Reader(s.db), starts, first)

    assert data["runs_per_day"] == {
        "days": starts,
        "by_status": {"completed": [1, 0, 1], "failed": [0, 0, 1], "running": [0, 0, 1]},
    }
    durations = dict(
        zip([*stats.DURATION_BUCKETS, None], data["run_duration_s"]["counts"], strict=True)
    )
    assert durations == {**dict.fromkeys(stats.DURATION_BUCKETS, 0), 5.0: 1, 300.0: 1, None: 1}
    latency = dict(
        zip([*stats.LATENCY_BUCKETS, None], data["llm_latency_s"]["counts"], strict=True)
    )
    assert latency == {**dict.fromkeys(stats.LATENCY_BUCKETS, 0), 0.5: 1, 2.0: 1, 10.0: 1, None: 1}
    assert data["run"] == {"id": first, "points": [(0.0, 0, 0), (0.0, 1, 100), (0.0, 2, 200)]}

    now[0] = starts[2] + 100
    long = s.create_run(spec())[0].id
    assert j.claim(1, 10**6) == [long]
    for i in range(stats.RUN_POINTS * 3 + 1):
        now[0] += 1
        j.record_llm_reply(long, {"content": str(i), "tool_calls": []}, 10, 0.1)
    points = stats.stats_series(Reader(s.db), starts, long)["run"]["points"]
    assert len(points) <= stats.RUN_POINTS + 1  # the start, then one per group of steps
    replies = stats.RUN_POINTS * 3 + 1
    assert points[-1] == (float(replies), replies, replies * 10)
    assert [p[1] for p in points] == sorted(p[1] for p in points)

    # A fork's copies of replies were one call to the model each: not measured again.
    from tui_agent.store.fork import fork_run

    latency_before = stats.stats_series(Reader(s.db), starts, first)["llm_latency_s"]
    before = stats.store_stats(Reader(s.db))["llm_latency_s"]
    fork_run(s.db, first, 2, spec(), "f" * 32)
    again = stats.stats_series(Reader(s.db), starts, first)
    assert again["llm_latency_s"] == latency_before
    assert stats.store_stats(Reader(s.db))["llm_latency_s"] == before
    s.close()


def test_the_status_bar_size_is_the_database_not_its_reused_log(tmp_path: Path) -> None:
    """The write-ahead log grows to about 4 MB and is reused; counting it showed a store
    of 143 KB as 4 MB that grew while idle (a stranger's walk). Pages not yet checkpointed
    count: a new store is not 4 KB."""
    from tui_agent.store.reader import Reader

    store = open_store(tmp_path / "tui-agent.db")
    reader = Reader(store.db)
    size = reader.sqlite_bytes()
    assert size is not None and size > 16_384  # the schema, still in the log
    assert (tmp_path / "tui-agent.db").stat().st_size < size
    (tmp_path / "tui-agent.db-wal").write_bytes(b"")  # untouched by what is shown
    store.close()
