"""SQLModel rows. Never imported outside `tui_agent.store`: callers get domain values."""

from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary, text
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata


class MetaRow(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class MigrationRow(SQLModel, table=True):
    __tablename__ = "schema_migrations"
    version: int = Field(primary_key=True)
    name: str
    applied_at: float


class RunRow(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_created", "created_at", "id"),
        Index("ix_runs_status_created", "status", "created_at", "id"),
        Index("ix_runs_owner", "owner"),
        Index("ix_runs_owner_pid", "owner_pid", sqlite_where=text("owner_pid IS NOT NULL")),
        Index(
            "ux_runs_live_key",
            "idem_key",
            unique=True,
            sqlite_where=text(
                "idem_key IS NOT NULL AND status NOT IN ('completed','failed','cancelled')"
            ),
        ),
    )
    id: str = Field(primary_key=True)
    idem_key: str | None = None
    status: str
    goal: str
    workspace: str
    model: str
    base_url: str | None = None
    budget_json: str
    policy_json: str
    state_json: str
    usage_steps: int = 0
    usage_tokens: int = 0
    usage_wall_s: float = 0.0
    result: str | None = None
    error: str | None = None
    pause_reason: str | None = None
    cancel_requested: bool = False
    owner: str | None = None
    owner_pid: int | None = None
    lease_until: float | None = None
    lost_at: float | None = None
    retry_attempt: int = 0
    retry_max: int = 0
    retry_at: float | None = None
    retry_error: str | None = None
    next_seq: int = 1
    revision: int = 0
    waiting_tool: str | None = None
    created_at: float
    updated_at: float
    queue: str = "default"
    epoch: int = 0
    owner_node: str | None = None
    callback_url: str | None = None


class StepRow(SQLModel, table=True):
    __tablename__ = "steps"
    __table_args__ = (
        Index(
            "ix_steps_compactions",
            "run_id",
            "seq",
            sqlite_where=text("kind = 'compaction'"),
            postgresql_where=text("kind = 'compaction'"),
        ),
    )
    run_id: str = Field(primary_key=True, foreign_key="runs.id", ondelete="CASCADE")
    seq: int = Field(primary_key=True)
    kind: str
    status: str
    tool: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    result: str | None = None
    artifact_id: str | None = None
    llm_seq: int | None = None
    payload_json: str = "{}"
    tokens: int = 0
    created_at: float
    finished_at: float | None = None


class ApprovalRow(SQLModel, table=True):
    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_run_status", "run_id", "status"),)
    id: str = Field(primary_key=True)
    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE")
    llm_seq: int
    call_id: str
    tool: str
    arguments: str
    args_hash: str
    risk: str
    model_reason: str = ""
    status: str
    created_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    always: bool = False


class ArtifactRow(SQLModel, table=True):
    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_run", "run_id"),)
    id: str = Field(primary_key=True)
    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE")
    seq: int
    size: int
    summary: str
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: float


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run", "run_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE")
    kind: str
    message: str
    data_json: str = "{}"
    created_at: float


class DeliveryRow(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_due", "status", "next_at"),
        Index("ix_deliveries_run", "run_id", "created_at"),
    )
    id: str = Field(primary_key=True)
    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE")
    url: str
    body: str
    status: str
    attempts: int = 0
    next_at: float
    last_error: str | None = None
    created_at: float
    delivered_at: float | None = None


class ExecutorRow(SQLModel, table=True):
    __tablename__ = "executors"
    pid: int = Field(primary_key=True)
    node: str = ""
    supervisor_pid: int
    started_at: float
    heartbeat_at: float


runs_t = metadata.tables["runs"]
steps_t = metadata.tables["steps"]
approvals_t = metadata.tables["approvals"]
artifacts_t = metadata.tables["artifacts"]
events_t = metadata.tables["events"]
executors_t = metadata.tables["executors"]
