"""Many runs at once against the scripted model server with 0.5 s latency, beside a floor
measured in the same run: the same conversations driven by the bare `openai` client from
threads, with no durability at all (streamed as tui-agent streams them; the `_no_stream`
variants ask both without streaming). Reports the ratio to that floor, to the ideal (every
turn waiting only for the model) and the total RSS of the supervisors and executors.

Variants: 200 runs on SQLite and on PostgreSQL (two executors each), and 1,000 runs on one
PostgreSQL store shared by three supervisors (three homes, three nodes, one machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from bench.common import bench_env, emit, pg_cluster, scratch, seed_run
from tests.fakes.llm_server import Reply, ScriptedLLM, call
from tui_agent.store.run_store import open_store

LATENCY_S = 0.5
EXECUTORS = 2
# What an executor's call watchdog costs (a bare Python process, ~11 MB RSS, 7-8 MB PSS):
# added to the budget of 300 MB a supervisor had before it existed (session 15).
WATCHDOG_MB = 12


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _floor(llm: ScriptedLLM, runs: int, turns: int, stream: bool) -> float:
    """The same conversations with the bare client: a thread each, tools run inline; with
    `stream`, asked as tui-agent asks by default (stream=True, the deltas joined)."""
    import openai

    client = openai.OpenAI(base_url=llm.base_url, api_key="sk-bench", max_retries=0)

    def ask(messages: list[dict[str, object]]) -> dict[str, object]:
        if not stream:
            reply = client.chat.completions.create(model="scripted", messages=messages)  # type: ignore[arg-type]
            return reply.choices[0].message.model_dump(exclude_none=True)
        content, calls = "", {}  # type: ignore[var-annotated]
        chunks = client.chat.completions.create(
            model="scripted",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in chunks:
            for choice in chunk.choices:
                content += choice.delta.content or ""
                for delta_call in choice.delta.tool_calls or []:
                    empty = {"id": "", "name": "", "arguments": ""}
                    entry = calls.setdefault(delta_call.index, empty)
                    entry["id"] = entry["id"] or delta_call.id or ""
                    if delta_call.function is not None:
                        entry["name"] = entry["name"] or delta_call.function.name or ""
                        entry["arguments"] += delta_call.function.arguments or ""
        message: dict[str, object] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for _, c in sorted(calls.items())
            ]
        return message

    def converse(i: int) -> None:
        messages: list[dict[str, object]] = [{"role": "user", "content": f"run {i}"}]
        for _ in range(turns):
            message = ask(messages)
            messages.append(message)
            for tool_call in message.get("tool_calls") or []:  # type: ignore[attr-defined]
                listing = "\n".join(sorted(os.listdir(".")))
                messages.append(
                    {"role": "tool", "tool_call_id": tool_call["id"], "content": listing}
                )
            if not message.get("tool_calls"):
                return

    threads = [threading.Thread(target=converse, args=(i,)) for i in range(runs)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def _tui_agent(
    llm: ScriptedLLM, runs: int, url: str | None, supervisors: int, stream: bool
) -> tuple[float, float, int]:
    """(elapsed, total RSS MB, processes) of `runs` through real supervisors."""
    per = max(1, runs // (supervisors * EXECUTORS))
    homes, envs = [], []
    for i in range(supervisors):
        home = scratch(f"concurrency-{i}")
        home.chmod(0o700)
        (home / "config.toml").write_text(
            f"max_concurrent_runs = {per}\nexecutors = {EXECUTORS}\nidle_exit_s = 60\n"
            f"stream = {'true' if stream else 'false'}\n"
        )
        extra = {"OPENAI_BASE_URL": llm.base_url, "TUI_AGENT_NODE": f"bench{i}"}
        if url:
            extra["TUI_AGENT_DB_URL"] = url
        env = bench_env(home, **extra)
        subprocess.run(
            [sys.executable, "-m", "tui_agent", "supervisor", "start"],
            env=env,
            check=True,
            capture_output=True,
        )
        homes.append(home)
        envs.append(env)
    sups = [int((home / "supervisor.lock").read_text()) for home in homes]
    time.sleep(2.5)  # every executor and the warm standbys up
    store = open_store(url or homes[0] / "tui-agent.db")
    start = time.perf_counter()
    for i in range(runs):
        seed_run(store, f"run {i}", homes[0], model="scripted", base_url=llm.base_url)
    while store.count_runs(statuses=["completed"]) < runs:
        failed = store.count_runs(statuses=["failed", "paused", "needs_attention"])
        if failed:
            raise RuntimeError(f"{failed} runs did not complete")
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    pids = list(sups)
    for sup in sups:
        found = subprocess.run(
            ["pgrep", "-f", f"supervisor-pid {sup}"], capture_output=True, text=True
        ).stdout.split()
        pids += [int(p) for p in found]
    for executor in pids[len(sups) :]:  # each executor's call watchdog
        found = subprocess.run(
            ["pgrep", "-P", str(executor)], capture_output=True, text=True
        ).stdout.split()
        pids += [int(p) for p in found]
    rss = sum(_rss_mb(p) for p in pids)
    store.close()
    for env in envs:
        subprocess.run(
            [sys.executable, "-m", "tui_agent", "supervisor", "stop"], env=env, capture_output=True
        )
    return elapsed, rss, len(pids)


def _measure(
    name: str, runs: int, turns: int, url: str | None, supervisors: int, *, stream: bool = True
) -> None:
    llm = ScriptedLLM().start()
    llm.latency_s = LATENCY_S
    llm.script = [Reply(f"turn {i}", [call("list_dir", {})]) for i in range(turns - 1)]
    llm.default = Reply("done")
    try:
        floor = _floor(llm, runs, turns, stream)
        elapsed, rss, processes = _tui_agent(llm, runs, url, supervisors, stream)
    finally:
        llm.stop()
    ideal = turns * LATENCY_S
    ratio = floor / elapsed
    budget_mb = (300 + WATCHDOG_MB * EXECUTORS) * supervisors
    emit(
        name,
        ratio,
        "x floor",
        1.0,
        f">= 0.9x the bare client; <= {budget_mb} MB",
        ratio >= 0.9 and rss <= budget_mb,
        elapsed_s=elapsed,
        floor_s=floor,
        ideal_s=ideal,
        ratio_to_ideal=ideal / elapsed,
        steps_per_s=runs * (2 * turns - 1) / elapsed,
        total_rss_mb=rss,
        processes=processes,
        supervisors=supervisors,
        executors_each=EXECUTORS,
        cores=os.cpu_count(),
        runs=runs,
        stream=stream,
    )


def run(quick: bool) -> None:
    turns = 4 if quick else 8  # LLM turns per run; each but the last asks for one tool call
    # Streamed (tui-agent's default) beside a floor that streams too, and both without.
    _measure("concurrency", 200, turns, None, 1)
    _measure("concurrency_no_stream", 200, turns, None, 1, stream=False)
    with pg_cluster("concurrency_postgres") as cluster:
        if cluster is not None:
            _measure("concurrency_postgres", 200, turns, cluster.new_database(), 1)
            url = cluster.new_database()
            _measure("concurrency_postgres_no_stream", 200, turns, url, 1, stream=False)
            url = cluster.new_database()
            _measure("concurrency_postgres_3_supervisors", 1000, turns, url, 3)


if __name__ == "__main__":
    run(quick=True)
