"""`dbsage chat` end to end: a real pseudo-terminal (pexpect), a real database, the screen read
back; plus --script / piped stdin, the asker and the completer in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from conftest import Db
from helpers import DBSAGE, migration, run_cli
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from dbsage.agent.chat import ChatAsker, DaraCompleter, greeting, handle_line, run_script
from dbsage.agent.commands import Session as ChatSession
from dbsage.agent.modes import Cancelled, Question

NAME = "20250101000000_todos.sql"
REL = f"supabase/migrations/{NAME}"
SQL = "create table todos (id int primary key, title text);\ninsert into todos values (1, 'a');\n"
PROMPT = r"dara\[interactive\]>"  # prompt_toolkit draws the trailing space as a move


def chat_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SUPABASE_DB_URL", "DATABASE_URL", "DBSAGE_MODEL")}
    env.update(TERM="xterm", NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="200", **extra)
    return env


def spawn_chat(db_url: str, project: Path) -> pexpect.spawn:
    child = pexpect.spawn(DBSAGE, ["chat", "--db", db_url], cwd=str(project), env=chat_env(),
                          encoding="utf-8", timeout=60, dimensions=(60, 200))
    child.logfile_read = sys.stdout  # shown by pytest on failure
    return child


def answer(child: pexpect.spawn, checkpoint: str, reply: str) -> None:
    """Wait for a checkpoint question on screen, then type the reply."""
    child.expect_exact(f"[{checkpoint}]")
    child.expect(r"[\])]:")
    child.sendline(reply)


def test_repl_dry_run_apply_smoke_exit(db18: Db, project: Path) -> None:
    migration(project, NAME, SQL)
    url = db18.url.replace("postgres@", "postgres:Hush123@", 1)
    child = spawn_chat(url, project)
    child.expect_exact("I'm Dara, the DB Sage")
    child.expect_exact("postgres:***@")
    child.expect_exact("Mode:     interactive")
    child.expect_exact("*help")
    child.expect(PROMPT)

    child.sendline(f"*dry-run {REL}")
    child.expect_exact("Dry-run passed")
    child.expect(PROMPT)

    child.sendline(f"*apply-migration {REL}")
    answer(child, "confirm_migration_file", "y")
    answer(child, "confirm_database", "yes")
    # dry_run_done is not asked: the passing dry-run above is on record.
    child.expect_exact("create table todos")  # confirm_apply lists statements with locks
    answer(child, "confirm_apply", "yes")
    child.expect_exact("Migration Applied Successfully")  # the report first, then the menu
    child.expect_exact("1. Run smoke tests")
    answer(child, "post_migration_menu", "1")
    child.expect_exact("Smoke test passed")  # the chosen command's own report
    child.expect(PROMPT)

    child.sendline("*smoke-test")
    child.expect_exact("Smoke test")
    child.expect(PROMPT)
    child.sendline("*dry-rn")
    child.expect_exact("Did you mean *dry-run?")
    child.expect(PROMPT)
    child.sendline("*dry-run")
    child.expect_exact("Usage: *dry-run PATH")
    child.expect(PROMPT)
    child.sendline("please undo the last one")
    child.expect_exact("Closest command: *rollback")
    child.expect_exact("DBSAGE_MODEL")
    child.expect(PROMPT)
    child.send("*status half typed")
    child.sendcontrol("c")  # cancels the line, not the chat
    child.expect(PROMPT)
    child.sendline("*status")
    child.expect_exact(f"Applied: 1\r\n  - {NAME}")
    child.expect(PROMPT)
    child.sendline("*exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Hush123" not in (child.before or "")
    assert db18.scalar("select count(*) from todos") == 1
    assert db18.scalar("select version from supabase_migrations.schema_migrations") == \
        "20250101000000"
    assert (project / ".dbsage" / "chat_history").read_text().count("*apply-migration") == 1


def test_repl_declining_a_checkpoint_changes_nothing_and_ctrl_d_leaves(db18: Db,
                                                                        project: Path) -> None:
    migration(project, NAME, SQL)
    child = spawn_chat(db18.url, project)
    child.expect(PROMPT)
    child.sendline(f"*apply-migration {REL}")
    answer(child, "confirm_migration_file", "yes")
    answer(child, "confirm_database", "no")
    child.expect_exact("Cancelled; pass --db to choose another database.")
    child.expect(PROMPT)
    child.send("*mo\t")  # Tab completes the command
    child.sendline(" yolo")
    child.expect_exact("Mode is now yolo")
    child.expect(r"dara\[yolo\]>")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert db18.scalar("select to_regclass('public.todos')") is None


def test_script_runs_each_line_and_stops_at_the_first_failure(db18: Db, project: Path) -> None:
    migration(project, NAME, SQL)
    script = project / "deploy.dara"
    script.write_text(f"# deploy\n*status\n\n*apply-migration {REL}\n*dry-rn {REL}\n*status\n")
    out = run_cli("chat", "--db", db18.url, "--script", str(script), cwd=project)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Migration Applied Successfully" in out.stdout  # confirmations answered yes
    assert "Did you mean *dry-run?" in out.stdout
    assert f"Stopped at line 5: *dry-rn {REL}" in out.stdout
    assert out.stdout.count("dara> *status") == 1  # nothing after the failure ran
    assert db18.scalar("select count(*) from todos") == 1


def test_piped_stdin_is_a_script(db18: Db, project: Path) -> None:
    migration(project, NAME, SQL)
    env = chat_env()
    ok = subprocess.run([DBSAGE, "chat", "--db", db18.url], input=f"*dry-run {REL}\n*exit\n*x\n",
                        cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Dry-run passed" in ok.stdout and "dara> *x" not in ok.stdout
    bad = subprocess.run([DBSAGE, "chat", "--db", db18.url], input="what is pending?\n",
                         cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Closest command: *status" in bad.stdout


def test_chat_help_says_script_answers_yes() -> None:
    out = run_cli("chat", "--help", cwd=Path.cwd())
    assert out.returncode == 0
    assert "answered yes" in " ".join(out.stdout.split())


# --------------------------------------------------------------------------- in-process


def test_chat_asker_validates_and_cancel_never_approves() -> None:
    replies = iter(["maybe", "N", "", "Y"])
    shown: list[str] = []
    asker = ChatAsker(lambda _msg: next(replies), shown.append)
    q = Question("confirm_apply", "Apply?", explanation="why", choices=("yes", "no"), default="yes")
    assert asker.ask(q) == "no"  # "maybe" is refused; N (any case) is no
    assert "  Please answer y or n." in shown and "  (why)" in shown
    target = Question("confirm_database", "Right target?", choices=("yes", "no"))
    assert asker.ask(target) == "yes"  # no default: the empty answer asks again
    assert "  Please answer y or n (this question has no default)." in shown

    def interrupted(_msg: str) -> str:
        raise KeyboardInterrupt

    def end_of_input(_msg: str) -> str:
        raise EOFError

    for stop in (interrupted, end_of_input):  # cancels the command, never answers for you
        with pytest.raises(Cancelled) as info:
            ChatAsker(stop, shown.append).ask(q)
        assert info.value.exit_code == 130 and "nothing was changed" in info.value.message
    menu = Question("post_migration_menu", "Next?", choices=("1", "2", "3", "4"), default="4")
    assert ChatAsker(lambda _m: "", shown.append).ask(menu) == "4"


def test_completer_offers_commands_paths_modes_and_options(project: Path) -> None:
    migration(project, NAME, SQL)
    migration(project, "20250102000000_more.sql", "select 1;")
    c = DaraCompleter(project)

    def texts(line: str) -> list[str]:
        return [x.text for x in c.get_completions(Document(line), CompleteEvent())]

    assert texts("*dr") == ["*dry-run"]
    assert "*apply-migration" in texts("*ap")
    assert texts("*apply-migration supabase/migrations/2025010") == [
        REL, "supabase/migrations/20250102000000_more.sql"]
    assert texts("*dry-run supabase/migrations/20250102") == [
        "supabase/migrations/20250102000000_more.sql"]
    assert texts("*mode p") == ["preflight"]
    assert texts("*apply-migration x --all") == [
        "--allow-destructive", "--allow-out-of-order", "--allow-transaction-control"]
    assert texts("*rollback latest --all") == ["--allow-data-loss"]
    assert texts("*rollback l") == ["latest"]
    assert texts("hello") == []


def test_greeting_and_free_text_offline_do_not_import_langchain(project: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from dbsage.agent.chat import greeting, handle_line\n"
        "from dbsage.agent.commands import Session as ChatSession\n"
        "s = ChatSession(db='postgresql://u:pw@h/d', project_dir=Path('.'))\n"
        "print(greeting(s))\n"
        "handle_line('*help', s)\nhandle_line('*mode yolo', s)\n"
        "handle_line('apply the pending migration', s)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain', 'langchain_core', 'langgraph')))\n")
    env = chat_env()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=project, env=env, check=True)
    assert out.stdout.rstrip().endswith("[]")
    assert "postgresql://u:***@h/d (from --db)" in out.stdout
    assert "Closest command: *apply-migration" in out.stdout
    assert "DBSAGE_MODEL=provider:model" in out.stdout


def test_greeting_without_a_target_names_the_embedded_server(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = greeting(ChatSession(project_dir=project, mode="preflight"))
    assert "embedded PostgreSQL" in text and "Mode:     preflight" in text


def test_handle_line_blank_and_script_exit(project: Path) -> None:
    session = ChatSession(project_dir=project)
    assert handle_line("   ", session) is None
    shown: list[str] = []
    assert run_script(["*help", "*exit", "*nonsense"], session, shown.append) == 0
    assert shown[0] == "dara> *help" and "dara> *nonsense" not in shown
