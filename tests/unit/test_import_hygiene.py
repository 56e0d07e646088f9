"""The seams, proven in fresh interpreters: the core never loads Textual, the CLI path never
loads openai, and the UI never reaches past the service layer."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tui_agent"


def _loaded(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_core_never_imports_textual() -> None:
    mods = _loaded(
        "import tui_agent.cli, tui_agent.service.local, tui_agent.engine.worker, "
        "tui_agent.supervisor.main, tui_agent.supervisor.executor, tui_agent.llm.openai_client"
    )
    assert "textual" not in mods


def test_cli_and_service_do_not_import_openai() -> None:
    mods = _loaded("import tui_agent.cli, tui_agent.service.local, tui_agent.engine.worker")
    assert "openai" not in mods


def test_supervisor_and_executor_do_not_load_the_orm() -> None:
    """Both start in plain sqlite3: after a crash of everything, the next step is one
    Python start-up plus the model client away (resume_all in bench/)."""
    mods = _loaded(
        "import tui_agent.supervisor.main, tui_agent.supervisor.executor, "
        "tui_agent.store.leases, tui_agent.store.journal"
    )
    assert not {m for m in mods if m.startswith(("sqlalchemy", "sqlmodel", "openai"))}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_ui_imports_only_the_service_api() -> None:
    forbidden = (
        "tui_agent.store",
        "tui_agent.engine",
        "tui_agent.llm",
        "tui_agent.tools",
        "tui_agent.supervisor",
        "tui_agent.service.local",
        "sqlmodel",
        "sqlalchemy",
        "openai",
    )
    for path in (PACKAGE / "ui").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_domain_modules_import_no_framework() -> None:
    for sub in ("domain", "store", "engine", "llm", "tools", "supervisor", "service"):
        for path in (PACKAGE / sub).rglob("*.py"):
            for name in _imports(path):
                assert not name.startswith(("textual", "tui_agent.ui")), f"{path} -> {name}"


def test_reading_a_home_does_not_load_the_orm(tmp_path: Path) -> None:
    """The TUI paints, and `ls`/`show` answer, before SQLAlchemy and SQLModel are imported
    (they cost more start-up than Textual); the first write loads them."""
    setup = (
        "from pathlib import Path\n"
        "from tui_agent.service.local import LocalService\n"
        "from tui_agent.settings import Settings\n"
        "service = LocalService.open(Settings(home=Path(sys.argv[1])))\n"
    )
    orm = "any(m.startswith(('sqlalchemy', 'sqlmodel')) for m in sys.modules)"
    code = (
        "import sys\n" + setup + "from tui_agent.service.api import StartRequest\n"
        "print(service.list_runs(text='anything'), service.count_waiting())\n"
        "service.supervisor_state()\n"
        f"print({orm})\n"
        "run, _ = service.store.create_run(service.build_spec(StartRequest('g', sys.argv[2])))\n"
        f"print({orm}, service.run_view(run.id).run.goal)\n"
    )
    home = str(tmp_path / "home")
    env = {**os.environ, "TUI_AGENT_HOME": home}
    (tmp_path / "ws").mkdir()
    run = [sys.executable, "-c", code, home, str(tmp_path / "ws")]
    subprocess.run([sys.executable, "-c", "import sys\n" + setup, home], check=True, env=env)
    out = subprocess.run(run, capture_output=True, text=True, check=True, env=env).stdout
    assert out.split("\n")[:3] == ["[] 0", "False", "True g"]
