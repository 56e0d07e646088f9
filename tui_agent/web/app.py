"""The HTTP API as an ASGI app (FastAPI): the CLI's commands as routes over the same
service, so validation, status rules and errors are the CLI's, answered as JSON.

Routes are plain `def`s: FastAPI runs them in its thread pool, where the service's
blocking store calls belong. Only the event stream is async (it waits on the change hub).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tui_agent import __version__
from tui_agent.domain.errors import (
    ApprovalTimedOut,
    BadInput,
    InvalidTransition,
    StoreUnavailable,
    TuiAgentError,
    UnknownRun,
)
from tui_agent.domain.models import STATUS_GROUPS, RunStatus
from tui_agent.service.api import AgentService, StartRequest
from tui_agent.service.fields import in_field_names
from tui_agent.service.keeper import keep_supervisor
from tui_agent.service.views import run_json, summary_json
from tui_agent.web.events import ChangeHub, run_events
from tui_agent.web.guard import Guard
from tui_agent.web.metrics import metrics_text

MAX_LIMIT = 500
log = logging.getLogger("tui_agent.web")
_STATUS_OF = (
    (UnknownRun, 404),
    (InvalidTransition, 409),
    (ApprovalTimedOut, 409),
    (BadInput, 400),
    (StoreUnavailable, 503),
)


class StartBody(BaseModel):
    """`POST /v1/runs`: the fields of `tui-agent run`."""

    model_config = ConfigDict(extra="forbid")
    goal: StrictStr
    workspace: StrictStr | None = None
    model: StrictStr | None = None
    max_steps: StrictInt | None = None
    max_llm_tokens: StrictInt | None = None
    max_wall_time_s: StrictFloat | None = None
    max_context_tokens: StrictInt | None = None
    auto_approve: list[StrictStr] = Field(default_factory=list)
    sandbox: StrictStr | None = None
    queue: StrictStr | None = None
    callback_url: StrictStr | None = None


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    always: StrictBool = False


class DenyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: StrictStr | None = None


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_steps: StrictInt | None = None
    max_llm_tokens: StrictInt | None = None
    max_wall_time_s: StrictFloat | None = None
    max_context_tokens: StrictInt | None = None


class SayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choice: StrictStr


def create_app(service: AgentService, *, keepalive_s: float = 15.0) -> FastAPI:
    hub = ChangeHub(service)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        keeper = asyncio.create_task(keep_supervisor(service, log))
        try:
            yield
        finally:
            keeper.cancel()
            await hub.stop()

    app = FastAPI(
        title="tui-agent",
        version=__version__,
        summary="Start, follow and decide agent runs (the CLI's commands over HTTP).",
        docs_url=None,  # the docs pages load scripts from a CDN; the schema is enough
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(Guard, token=service.api_token)
    _error_handlers(app)

    def view(run_id: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return _json(run_json(service.run_view(run_id)), status, headers)

    @app.api_route(
        "/healthz", methods=["GET", "HEAD"], tags=["server"], response_class=JSONResponse
    )
    def healthz() -> Response:
        """Liveness and the store's reachability (no token needed; tells nothing private)."""
        service.count_waiting()  # one cheap read: a store away is a 503
        return _json({"status": "ok"})

    @app.post("/v1/runs", status_code=202, tags=["runs"], response_class=JSONResponse)
    def start_run(
        body: StartBody,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Start a run (202 and the run); the same `Idempotency-Key` while that run is not
        final returns it again (200)."""
        if body.workspace is not None and not body.workspace.startswith("/"):
            raise BadInput(
                "workspace must be an absolute path (the server's own directory is not yours)"
            )
        started, created = service.start_run_view(
            StartRequest(
                goal=body.goal,
                workspace=body.workspace,
                model=body.model,
                max_steps=body.max_steps,
                max_llm_tokens=body.max_llm_tokens,
                max_wall_time_s=body.max_wall_time_s,
                max_context_tokens=body.max_context_tokens,
                auto_approve=tuple(body.auto_approve),
                key=_header_text(idempotency_key),
                sandbox=body.sandbox,
                queue=body.queue,
                callback_url=body.callback_url,
            )
        )
        run_id = started.run.id
        return _json(run_json(started), 202 if created else 200, {"Location": f"/v1/runs/{run_id}"})

    @app.get("/v1/runs", tags=["runs"], response_class=JSONResponse)
    def list_runs(
        status: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        before: str | None = None,
    ) -> Response:
        """Runs newest first, as `ls --json`; `next` is the cursor of the following page.
        `status` (repeatable) takes a status or a group: waiting, final, resumable."""
        runs = service.list_runs(statuses=_statuses(status), limit=limit, before=_cursor(before))
        nxt = _encode_cursor(runs[-1].created_at, runs[-1].id) if len(runs) == limit else None
        return _json({"runs": [summary_json(r, service.reason(r)) for r in runs], "next": nxt})

    @app.get("/v1/runs/{ref}", tags=["runs"], response_class=JSONResponse)
    def get_run(ref: str) -> Response:
        """The run as `show --json` prints it (the id or a unique prefix of it)."""
        return view(service.resolve_ref(ref))

    @app.post("/v1/runs/{ref}/approve", tags=["decisions"], response_class=JSONResponse)
    def approve(ref: str, body: Annotated[ApproveBody | None, Body()] = None) -> Response:
        run_id = service.resolve_ref(ref)
        service.approve(run_id, always=bool(body and body.always))
        return view(run_id)

    @app.post("/v1/runs/{ref}/deny", tags=["decisions"], response_class=JSONResponse)
    def deny(ref: str, body: Annotated[DenyBody | None, Body()] = None) -> Response:
        run_id = service.resolve_ref(ref)
        service.deny(run_id, reason=body.reason if body else None)
        return view(run_id)

    @app.post("/v1/runs/{ref}/cancel", tags=["decisions"], response_class=JSONResponse)
    def cancel(ref: str) -> Response:
        run_id = service.resolve_ref(ref)
        service.cancel(run_id)
        return view(run_id)

    @app.post("/v1/runs/{ref}/resume", tags=["decisions"], response_class=JSONResponse)
    def resume(ref: str, body: Annotated[ResumeBody | None, Body()] = None) -> Response:
        run_id = service.resolve_ref(ref)
        body = body or ResumeBody()
        service.resume(
            run_id,
            max_steps=body.max_steps,
            max_llm_tokens=body.max_llm_tokens,
            max_wall_time_s=body.max_wall_time_s,
            max_context_tokens=body.max_context_tokens,
        )
        return view(run_id)

    @app.post("/v1/runs/{ref}/resolve", tags=["decisions"], response_class=JSONResponse)
    def resolve(ref: str, body: ResolveBody) -> Response:
        """Decide a call left in doubt: retry, skip, or fail (which, like cancel, fails it)."""
        if body.choice not in ("retry", "skip", "fail"):
            raise BadInput(f"choice must be retry, skip or fail, not {body.choice!r}")
        run_id = service.resolve_ref(ref)
        service.resolve(run_id, body.choice)
        return view(run_id)

    @app.post("/v1/runs/{ref}/say", tags=["decisions"], response_class=JSONResponse)
    def say(ref: str, body: SayBody) -> Response:
        """A follow-up or steering message as a step: a completed run continues with it, one
        under way sees it at its next model call (failed or cancelled: 409). The run, with
        the message's step as `message_seq`."""
        run_id = service.resolve_ref(ref)
        _, seq = service.say(run_id, body.text)
        return _json({**run_json(service.run_view(run_id)), "message_seq": seq})

    @app.get("/v1/runs/{ref}/events", tags=["runs"], response_class=EventSourceResponse)
    async def events(
        ref: str, request: Request, last_event_id: Annotated[str | None, Header()] = None
    ) -> EventSourceResponse:
        """Server-Sent Events of the run; `Last-Event-ID` resumes after an event."""
        from anyio import to_thread

        run_id = await to_thread.run_sync(service.resolve_ref, ref)
        stream = run_events(service, hub, run_id, last_event_id)
        return EventSourceResponse(stream, ping=keepalive_s)

    @app.get("/v1/stats", tags=["server"], response_class=JSONResponse)
    def stats(since: Annotated[float | None, Query(ge=0)] = None) -> Response:
        """As `stats --json` (`since`: days)."""
        return _json(service.stats(since))

    @app.get("/metrics", tags=["server"], response_class=Response)
    def metrics() -> Response:
        """Prometheus' text format, computed from the store."""
        return Response(
            metrics_text(service.metric_figures),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    return app


def _error_handlers(app: FastAPI) -> None:
    """Every error is JSON with an `error` line a person can read; never a traceback."""

    @app.exception_handler(TuiAgentError)
    async def domain_error(_request: Request, exc: TuiAgentError) -> JSONResponse:
        code = next((c for kind, c in _STATUS_OF if isinstance(exc, kind)), 500)
        headers = {"Retry-After": "5"} if code == 503 else None
        return JSONResponse({"error": in_field_names(str(exc))}, code, headers)

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        detail = [{k: e.get(k) for k in ("loc", "msg", "type")} for e in errors]
        return JSONResponse({"error": _malformed_line(errors), "detail": detail}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, UnicodeError):  # text no store can keep; refused before writing
            return JSONResponse({"error": "the request holds text that is not valid"}, 400)
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def _malformed_line(errors: Any) -> str:
    """One line for a body the model could not take."""
    if not errors:
        return "malformed request"
    first = errors[0]
    kind = first.get("type", "")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    if kind == "json_invalid":
        return "the body is not valid JSON"
    if kind in ("model_attributes_type", "dict_type") and not where:
        return "the body must be a JSON object (send Content-Type: application/json)"
    if kind == "missing" and not where:
        return 'a JSON body is needed (at least {"goal": ...})'
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"{where} is not a field of this request"
    return f"{where}: {first.get('msg', 'malformed')}" if where else str(first.get("msg"))


def _statuses(names: list[str] | None) -> list[str] | None:
    """Statuses and groups (waiting, final, resumable), as `ls --status`; unknown: 400."""
    if not names:
        return None
    known = {s.value for s in RunStatus}
    out: list[str] = []
    for name in names:
        if name in STATUS_GROUPS:
            out += STATUS_GROUPS[name]
        elif name in known:
            out.append(name)
        else:
            choices = ", ".join([*sorted(known), *STATUS_GROUPS])
            raise BadInput(f"status {name[:40]!r} is not one of {choices}")
    return out


def _header_text(value: str | None) -> str | None:
    """A header as the client wrote it: HTTP hands it over as Latin-1; UTF-8 is meant."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The body encoded once, as it is (FastAPI's own encoding walks it again)."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status, headers, media_type="application/json")


def _encode_cursor(created_at: float, run_id: str) -> str:
    raw = json.dumps([created_at, run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(text: str | None) -> tuple[float, str] | None:
    if text is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_at, run_id = json.loads(raw)
        if not isinstance(run_id, str):
            raise ValueError
        return float(created_at), run_id
    except (ValueError, TypeError, json.JSONDecodeError):
        raise BadInput("before is not a cursor this server gave (use `next` as it is)") from None
