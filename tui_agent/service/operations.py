"""The service's operations on whole runs: fork (and its preview), a person's message,
prune, and the statistics. A mixin of `LocalService`, which they are called through."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tui_agent.domain.errors import BadInput
from tui_agent.domain.models import Policy, Run, RunSpec, RunStatus, parsed_arguments
from tui_agent.service.api import Histogram, StartRequest, StatsSeries
from tui_agent.service.validation import MAX_MESSAGE_CHARS, RISKS, check_storable_text

if TYPE_CHECKING:
    from tui_agent.settings import Settings
    from tui_agent.store.db import Database
    from tui_agent.store.reader import Reader


class RunOperations:
    """What these operations need of the service they are mixed into (`LocalService`):
    its settings, reader and writing database, its validation and its supervisor kick."""

    settings: Settings
    reader: Reader
    who: str

    if TYPE_CHECKING:

        @property
        def db(self) -> Database: ...
        def now(self) -> float: ...
        def get_run(self, run_id: str) -> Run: ...
        def build_spec(self, request: StartRequest) -> RunSpec: ...
        def _kick_supervisor(self) -> None: ...
        def _check_can_go_on(self, run: Run) -> None: ...

    def fork(self, run_id: str, at: int, request: StartRequest) -> tuple[Run, list[dict[str, Any]]]:
        """A new queued run from step `at` of `run_id` (which is only read), with the
        request's goal, model, workspace, budgets, auto-approve and sandbox where given
        (else the original's; an empty goal keeps it). Returns it and the risky calls
        recorded after `at`, which it will have to have approved again (approvals are
        never copied)."""
        from tui_agent.store.fork import fork_run

        spec = self._fork_spec(self.get_run(run_id), request)
        run, _ = fork_run(self.db, run_id, at, spec, uuid.uuid4().hex)
        again = self._will_ask_again(run_id, at, spec.policy)
        self._kick_supervisor()
        return run, again

    def fork_preview(
        self, run_id: str, at: int, request: StartRequest | None = None
    ) -> list[dict[str, Any]]:
        """What `fork` with these arguments would return as `will_ask_again`, writing
        nothing; the same BadInput as `fork` where it would refuse."""
        from tui_agent.store.fork import check_fork_budget, fork_point

        source = fork_point(self.reader, run_id, at)
        spec = self._fork_spec(source, request or StartRequest(goal=""))
        check_fork_budget(self.reader.steps(run_id, limit=at), spec.budget, at)
        return self._will_ask_again(run_id, at, spec.policy)

    def _fork_spec(self, source: Run, request: StartRequest) -> RunSpec:
        """The fork's spec: the request's values where given, else the original's."""
        if source.policy.problem and not (request.auto_approve or request.sandbox):
            raise BadInput(
                f"run {source.id[:8]}'s recorded policy cannot be read "
                f"({source.policy.problem}); give the fork its own (--auto-approve RISK, "
                "--sandbox MODE)"
            )
        auto = request.auto_approve or tuple(
            r for r in RISKS if r not in source.policy.approval_risks
        )
        spec = self.build_spec(
            replace(
                request,
                goal=request.goal or source.goal,
                workspace=request.workspace or source.workspace,
                model=request.model or source.model,
                auto_approve=auto,
                sandbox=request.sandbox or source.policy.sandbox,
                queue=request.queue or source.queue,
                key=None,
            )
        )
        budget = replace(
            source.budget,
            **{
                k: v
                for k, v in (
                    ("max_steps", request.max_steps),
                    ("max_llm_tokens", request.max_llm_tokens),
                    ("max_wall_time_s", request.max_wall_time_s),
                    ("max_context_tokens", request.max_context_tokens),
                )
                if v is not None
            },
        )
        return replace(spec, budget=budget)

    def _will_ask_again(self, run_id: str, at: int, policy: Policy) -> list[dict[str, Any]]:
        """The risky calls recorded after step `at` that a run of `policy` must have
        approved again if its model makes them."""
        from tui_agent.tools.builtin import builtin_registry

        registry = builtin_registry()
        steps = self.reader.steps(run_id)
        # The calls the last copied reply asked for and no copied step answered: the fork
        # makes them first (the original may not have recorded them yet: it waits).
        replies = [s for s in steps if s.kind.value == "llm" and s.seq <= at]
        open_calls: dict[str, tuple[int, str, Any]] = {}
        if replies:
            answered = {s.call_id for s in steps if s.seq <= at and s.llm_seq == replies[-1].seq}
            for c in replies[-1].payload.get("tool_calls", []):
                if c.get("id") not in answered:
                    open_calls[c.get("id")] = (replies[-1].seq, c.get("name"), c.get("arguments"))
        found = [(seq, name, parsed_arguments(a)) for seq, name, a in open_calls.values()]
        for step in steps:
            if step.kind.value == "tool" and step.seq > at and step.call_id not in open_calls:
                found.append((step.seq, step.tool, step.parsed_arguments()))
        again = []
        for seq, name, arguments in found:
            tool = registry.get(name or "")
            if tool is not None and policy.needs_approval(tool.name, tool.risk.value):
                again.append(
                    {"seq": seq, "tool": tool.name, "arguments": arguments, "risk": tool.risk.value}
                )
        return again

    def prune(
        self, *, older_than_days: float | None, statuses: list[str], dry_run: bool
    ) -> dict[str, int]:
        """Delete final runs older than that many days (default: `retention_days`)."""
        from tui_agent.domain.models import FINAL_STATUSES
        from tui_agent.store.prune import prune_runs

        days = older_than_days if older_than_days is not None else self.settings.retention_days
        if days is None:
            raise BadInput("give --older-than DAYS (or set retention_days in config.toml)")
        if days != days or days < 0:
            raise BadInput(f"--older-than must be 0 or more days, not {days:g}")
        final = sorted(s.value for s in FINAL_STATUSES)
        for status in statuses:
            if status not in final:
                raise BadInput(f"only final runs are pruned ({', '.join(final)}), not {status!r}")
        report = prune_runs(
            self.db,
            cutoff=self.now() - days * 86400,
            statuses=tuple(statuses or final),
            dry_run=dry_run,
        )
        return report.to_dict()

    def stats(self, since_days: float | None = None) -> dict[str, Any]:
        from tui_agent.store.stats import store_stats

        since = None if since_days is None else self.now() - since_days * 86400
        return store_stats(self.reader, since)

    def stats_series(self, run_id: str | None = None, *, days: int = 14) -> StatsSeries:
        from tui_agent.store.stats import day_starts, stats_series

        if not 1 <= days <= 366:
            raise BadInput(f"the statistics cover 1 to 366 days, not {days}")
        data = stats_series(self.reader, day_starts(self.now(), days), run_id)
        run = data["run"]
        return StatsSeries(
            run_id=run_id,
            run_points=tuple((float(t), int(n), int(k)) for t, n, k in run["points"])
            if run
            else (),
            run_duration_s=_histogram(data["run_duration_s"]),
            llm_latency_s=_histogram(data["llm_latency_s"]),
            day_starts=tuple(data["runs_per_day"]["days"]),
            runs_per_day={k: tuple(v) for k, v in data["runs_per_day"]["by_status"].items()},
            run_gone=bool(run) and not run["points"],  # a run that exists starts at (0, 0, 0)
        )

    def metric_figures(self) -> dict[str, Any]:
        from tui_agent.store.stats import metric_figures

        return metric_figures(self.reader)

    def say(self, run_id: str, text: str) -> tuple[Run, int]:
        """Add a person's message to the run (a `user` step); returns the run as it now
        stands and the step's seq. A completed run continues with it (checked first, as
        a resume is); any other run that is not final sees it at its next model call (a
        paused or waiting one once a person lets it go on). Failed and cancelled runs take
        none."""
        from tui_agent.store.messages import add_message

        check_storable_text("the message", text)
        text = text.strip()
        if not text:
            raise BadInput("the message must not be empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise BadInput(f"the message is longer than {MAX_MESSAGE_CHARS:,} characters")
        run = self.get_run(run_id)
        if run.status is RunStatus.COMPLETED:
            self._check_can_go_on(run)
        run, seq = add_message(self.db, run_id, text, self.who)
        if run.status is RunStatus.QUEUED:
            self._kick_supervisor()
        return run, seq


def _histogram(data: dict[str, list[Any]]) -> Histogram:
    """The store's histogram (JSON lists) as the service API's frozen value."""
    return Histogram(bounds=tuple(data["bounds"]), counts=tuple(data["counts"]))
