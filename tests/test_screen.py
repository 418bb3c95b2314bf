"""What a person sees: `dbsage apply` (interactive and pre-flight), `dbsage plan` and
`dbsage chat` driven in a pseudo-terminal (pexpect) on a real Supabase-shaped PostgreSQL 18,
as its non-superuser owner role `postgres`. The screen is read back and asserted on: the
order of the questions, the defaults they show, y/n in any case, Ctrl-D (exit 130, nothing
changed), pre-flight's plan table and its one form, the menu after the report.

TERM=dumb: no colour, no cursor movement, and rich's fixed 80 columns, so the screen is the
same on every machine. rich wraps long lines at word boundaries; `Screen.flat` joins them
again for the assertions.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pexpect
import pytest
from helpers import DBSAGE, lock_is_free, migration, run_cli
from supabase_shaped import SupaDb

NAME = "20250101000000_items.sql"
REL = f"supabase/migrations/{NAME}"
SQL = ("create table public.items (id bigint primary key, name text);\n"
       "alter table public.items enable row level security;\n"
       "insert into public.items values (1, 'a');\n")
# A prompt waits for an answer at the end of the screen: [Y/n], [y/N], [y/n], a menu's
# default in brackets, or pre-flight's one line of answers.
PROMPT = re.compile(r"(\[[Yy]/[Nn]\]|\[[0-9/]+\] \(\d\)|e\.g\. y y n\):) $")


def screen_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SUPABASE_DB_URL", "DATABASE_URL", "DBSAGE_MODEL", "PGPASSWORD")}
    env.update(TERM="dumb", COLUMNS="80", LINES="40", NO_COLOR="1")
    return env


class Screen:
    """One dbsage process in a pseudo-terminal and everything it has shown so far."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.child = pexpect.spawn(DBSAGE, args, cwd=str(cwd), env=screen_env(),
                                   encoding="utf-8", timeout=90, dimensions=(40, 80))
        self.child.logfile_read = sys.stdout  # shown by pytest when a test fails
        self.text = ""
        self.prompts: list[str] = []  # each question as it stood when input was awaited
        self.mark = 0  # where the screen stood when the last answer was typed

    def _took(self) -> str:
        seen = str(self.child.before) + (self.child.after if isinstance(self.child.after, str)
                                         else "")
        self.text += seen
        return seen

    def prompt(self) -> str:
        """Wait for the next question; return it (the screen's last lines, flattened)."""
        self.child.expect(PROMPT)
        seen = flat(self._took())
        self.prompts.append(seen)
        self.mark = len(self.text)
        return seen

    def answer(self, reply: str) -> str:
        """Wait for the next question, type `reply` and Enter; return the question."""
        question = self.prompt()
        self.child.sendline(reply)
        return question

    def ctrl_d(self) -> str:
        """Wait for the next question and end the input (Ctrl-D)."""
        question = self.prompt()
        self.child.sendeof()
        return question

    def finish(self) -> int:
        """Wait for the process to end; its exit status."""
        self.child.expect(pexpect.EOF)
        self._took()
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    @property
    def flat(self) -> str:
        return flat(self.text)


def flat(text: str) -> str:
    """The screen with rich's wrapped lines joined again (one space for a line break)."""
    return re.sub(r"\s*\r?\n\s*", " ", text)


def table_exists(db: SupaDb, name: str = "public.items") -> bool:
    return bool(db.scalar("select to_regclass(%s) is not null", (name,)))


def history(db: SupaDb) -> list[str]:
    if not db.scalar("select to_regclass('supabase_migrations.schema_migrations') is not null"):
        return []
    with db.connect() as conn:
        return [r[0] for r in conn.execute(
            "select version from supabase_migrations.schema_migrations order by 1")]


# --------------------------------------------------------------------------- interactive


def test_interactive_apply_as_a_person_sees_it(supa_db18: SupaDb, project: Path) -> None:
    migration(project, NAME, SQL)
    s = Screen(["apply", REL, "--db", supa_db18.url], project)
    first = s.answer("Y")  # any case
    assert f"Migration file: {REL}. Apply this file? [Y/n]" in first
    assert "in one transaction: any error rolls all of them back" in first
    target = s.answer("")  # no default: Enter asks again
    assert "Is this the right target? [y/n]" in target and "postgres:***@" in target
    again = s.answer("yes")
    assert "Please answer y or n (this question has no default)." in again
    assert "Is this the right target? [y/n]" in again
    dry = s.answer("n")
    assert f"Has a dry-run of {REL} passed on this database? [y/N]" in dry  # safe default: no
    offer = s.answer("")  # Enter takes "yes": run the dry-run now
    assert f"Run a dry-run of {REL} now, then apply if it passes? [Y/n]" in offer
    confirm = s.answer("y")
    assert "Apply the statements listed above, with their lock levels, now? [Y/n]" in confirm
    assert "ACCESS EXCLUSIVE" in confirm and "create table public.items" in confirm
    assert "snapshot" not in confirm.lower().split("dry-run")[-1]  # no snapshot "Continue?"
    menu = s.answer("4")
    assert menu.index("Migration Applied Successfully") < menu.index("1. Run smoke tests")
    assert "What next? [1/2/3/4] (4)" in menu  # the menu comes after the report
    assert "(dbsage smoke-test)" in menu  # in the shell's syntax
    assert s.finish() == 0
    assert len(s.prompts) == 7
    assert table_exists(supa_db18) and history(supa_db18) == ["20250101000000"]
    assert supa_db18.scalar("select count(*) from dbsage.dry_run_log where passed") == 1
    assert "Traceback" not in s.text


def test_the_menu_after_the_report_runs_the_chosen_command(supa_db18: SupaDb,
                                                           project: Path) -> None:
    migration(project, NAME, SQL)
    s = Screen(["apply", REL, "--db", supa_db18.url], project)
    for reply in ("y", "y", "y", "y"):  # file, target, dry-run passed, apply
        s.answer(reply)
    menu = s.answer("1")
    assert "Migration Applied Successfully" in menu
    assert s.finish() == 0
    after = s.flat.split("What next?", 1)[1]
    assert "Smoke test passed" in after  # the chosen command's own report, after the menu


@pytest.mark.parametrize("at", [0, 3])  # the first question; the last one before applying
def test_ctrl_d_at_a_question_cancels_with_130_and_changes_nothing(
        supa_db18: SupaDb, project: Path, at: int) -> None:
    migration(project, NAME, SQL)
    s = Screen(["apply", REL, "--db", supa_db18.url], project)
    for _ in range(at):
        s.answer("y")
    question = s.ctrl_d()
    mark = s.mark
    assert s.finish() == 130
    assert ("Apply this file?" if at == 0 else "Apply the statements listed above") in question
    tail = [x for x in s.text[mark:].splitlines() if x.strip()]
    assert len(tail) == 1 and tail[0].startswith("⏹ Cancelled: end of input at"), tail
    assert "nothing was changed" in flat(s.text[mark:])  # one line, no failure block
    assert "Aborted" not in s.text and "Traceback" not in s.text
    assert not table_exists(supa_db18) and history(supa_db18) == []
    assert lock_is_free(supa_db18)  # type: ignore[arg-type]


def test_a_destructive_override_shows_the_rows_at_stake_and_defaults_to_no(
        supa_db18: SupaDb, project: Path) -> None:
    supa_db18.execute("create table public.items (id bigint primary key, note text);"
                      "alter table public.items enable row level security;"
                      "insert into public.items select g, 'n' from generate_series(1, 37) g")
    migration(project, NAME, "alter table public.items drop column note;\n")
    s = Screen(["apply", REL, "--db", supa_db18.url], project)
    override = s.answer("")  # Enter: the safe default, no
    assert "the migration destroys data" in override and "Continue anyway? [y/N]" in override
    assert "drop column public.items (note): 37 row(s) at stake" in override
    assert s.finish() == 6
    assert supa_db18.scalar("select count(note) from public.items") == 37


def test_an_overridden_check_reads_as_overridden_in_the_report(supa_db18: SupaDb,
                                                               project: Path) -> None:
    supa_db18.execute("create table public.items (id bigint primary key, note text);"
                      "alter table public.items enable row level security;"
                      "insert into public.items select g, 'n' from generate_series(1, 3) g")
    migration(project, NAME, "alter table public.items drop column note;\n")
    s = Screen(["apply", REL, "--db", supa_db18.url], project)
    for reply in ("y", "y", "y", "y", "y"):  # override, file, target, dry-run passed, apply
        s.answer(reply)
    assert "What next?" in s.answer("4")
    assert s.finish() == 0
    report = s.flat.split("Migration Applied Successfully", 1)[1]
    assert "No statement destroys data (DROP TABLE/COLUMN" in report
    assert "(overridden)" in report and "✗ No statement destroys data" not in report


def test_a_concurrently_only_file_never_says_one_transaction(supa_db18: SupaDb,
                                                            project: Path) -> None:
    supa_db18.execute("create table public.items (id bigint primary key, name text);"
                      "alter table public.items enable row level security")
    migration(project, NAME, "create index concurrently items_name_idx on public.items (name);\n")
    s = Screen(["apply", REL, "--db", supa_db18.url], project)
    for reply in ("y", "y", "n", "y", "y"):
        s.answer(reply)
    s.answer("4")
    assert s.finish() == 0
    assert "outside a transaction" in s.flat
    assert "in one transaction" not in s.flat and "in transaction" not in s.flat
    assert supa_db18.scalar("select to_regclass('public.items_name_idx') is not null")


# --------------------------------------------------------------------------- pre-flight

DESTRUCTIVE = ("alter table public.items drop column note;\n"
               "delete from public.items;\n")


def _items_with_rows(db: SupaDb, rows: int = 25) -> None:
    db.execute("create table public.items (id bigint primary key, note text);"
               "alter table public.items enable row level security;"
               f"insert into public.items select g, 'n' from generate_series(1, {rows}) g")


def test_preflight_shows_the_plan_then_one_form_then_runs_without_a_prompt(
        supa_db18: SupaDb, project: Path) -> None:
    _items_with_rows(supa_db18)
    migration(project, NAME, DESTRUCTIVE)
    s = Screen(["apply", REL, "--db", supa_db18.url, "--mode", "preflight"], project)
    form = s.answer("")  # one line of answers; empty: the target has no default
    before_plan = s.text.split("Plan: ", 1)[0]
    assert not PROMPT.search(flat(before_plan)) and "[y/" not in before_plan.lower()
    table = s.text.split("Plan: ", 1)[1]
    header = next(x for x in table.splitlines() if x.strip().startswith("line"))
    assert header.split() == ["line", "statement", "lock", "size", "rewrite", "at", "stake",
                              "lint"]
    rows = {x.split()[0]: x for x in table.splitlines() if re.match(r"^\s+\d+\s", x)}
    assert "ACCESS EXCLUSIVE" in rows["1"] and "25 rows" in rows["1"]
    assert "ban-drop-column" in rows["1"]
    assert "ROW EXCLUSIVE" in rows["2"] and "25 rows" in rows["2"]
    assert "strongest lock on an existing table: ACCESS EXCLUSIVE" in form
    assert "Before anything runs, answer every question of the plan at once:" in form
    questions = form.split("answer every question of the plan at once:", 1)[1]
    numbered = re.findall(r"(\d)\. (.*?)\s+(\[[yY]/[nN]\])", questions)
    assert [(n, hint) for n, _, hint in numbered] == [
        ("1", "[y/N]"), ("2", "[Y/n]"), ("3", "[y/n]"), ("4", "[Y/n]")]
    assert "the migration destroys data" in numbered[0][1]
    assert "delete without where public.items: 25 row(s) at stake" in form
    assert "Is this the right target?" in numbered[2][1]
    assert "Apply the statements listed above" in numbered[3][1]
    again = s.answer("y y")
    assert "Question(s) 3 have no default" in again
    last = s.answer("Y y YES y")
    assert "4 question(s), 2 answer(s): give one per question." in last
    assert s.finish() == 0
    after = s.text.split("Y y YES y", 1)[1]
    assert not PROMPT.search(flat(after))  # runs with no prompt after the form
    assert "Migration Applied Successfully" in flat(after) and "(overridden)" in flat(after)
    assert len(s.prompts) == 3  # the one form, asked again twice
    assert supa_db18.scalar("select count(*) from public.items") == 0
    assert history(supa_db18) == ["20250101000000"]


def test_preflight_no_in_the_form_stops_before_anything_changes(supa_db18: SupaDb,
                                                                project: Path) -> None:
    _items_with_rows(supa_db18, 4)
    migration(project, NAME, DESTRUCTIVE)
    s = Screen(["apply", REL, "--db", supa_db18.url, "--mode", "preflight"], project)
    s.answer("n y y y")  # no to the destructive override
    assert s.finish() == 6
    assert "was answered no in the plan review; nothing was changed" in s.flat
    assert supa_db18.scalar("select count(note) from public.items") == 4
    assert history(supa_db18) == []


def test_preflight_ctrl_d_at_the_form_cancels_with_130(supa_db18: SupaDb,
                                                      project: Path) -> None:
    migration(project, NAME, SQL)
    s = Screen(["apply", REL, "--db", supa_db18.url, "--mode", "preflight"], project)
    s.ctrl_d()
    assert s.finish() == 130
    assert "⏹ Cancelled: end of input" in s.flat
    assert not table_exists(supa_db18) and history(supa_db18) == []


def test_up_in_preflight_shows_each_files_table_and_one_form(supa_db18: SupaDb,
                                                               project: Path) -> None:
    migration(project, NAME, SQL)
    migration(project, "20250102000000_note.sql",
              "alter table public.items add column note text;\n")
    s = Screen(["up", "--db", supa_db18.url, "--mode", "preflight"], project)
    form = s.answer("y")
    assert "Plan: 2 pending migration(s) on" in form
    assert f"1. {NAME}: strongest lock on an existing table: none" in form
    assert "2. 20250102000000_note.sql: strongest lock on an existing table: ACCESS EXCLUSIVE" \
        in form
    assert " ".join(form.split()).count("line statement lock size rewrite at stake lint") == 2
    assert "Before anything runs, answer every question of the plan at once:" in form
    assert "Bring it up to date with supabase/migrations/?  [y/n]" in form
    assert s.finish() == 0
    assert not PROMPT.search(flat(s.text[s.mark:]))  # nothing asked after the form
    assert history(supa_db18) == ["20250101000000", "20250102000000"]


# --------------------------------------------------------------------------- plan


def test_plan_prints_the_plan_and_exits_with_the_failed_checks_code(supa_db18: SupaDb,
                                                                    project: Path) -> None:
    _items_with_rows(supa_db18, 12)
    migration(project, NAME, DESTRUCTIVE)
    out = run_cli("plan", REL, "--db", supa_db18.url, cwd=project,
                  env={"COLUMNS": "100", "TERM": "dumb"})
    assert out.returncode == 6, out.stdout + out.stderr
    assert "line  statement" in out.stdout and "12 rows" in out.stdout
    assert "strongest lock on an existing table: ACCESS EXCLUSIVE" in out.stdout
    assert "the migration destroys data" in out.stdout
    md = next((project / "supabase" / "plans").glob("*_plan.md")).read_text()
    assert "{'" not in md and "'kind'" not in md  # a document, not Python reprs
    assert "- line 1: drops column(s) note of public.items: 12 row(s) at stake" in md
    assert "- line 2: deletes every row of public.items (DELETE without WHERE)" in md
    assert "- line 1: warning `ban-drop-column`" in md
    assert "| public.items |" in md and "strongest lock on an existing table" in md
    assert supa_db18.scalar("select count(*) from public.items") == 12
    safe = migration(project, "20250102000000_more.sql",
                     "create table public.more (id bigint primary key);\n"
                     "alter table public.more enable row level security;\n")
    ok = run_cli("plan", str(safe.relative_to(project)), "--db", supa_db18.url, cwd=project,
                 env={"COLUMNS": "100"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "strongest lock on an existing table: none (the locks on tables this migration " \
           "creates block nobody)" in ok.stdout
    assert re.search(r"create table public\.more.*ACCESS EXCLUSIVE\s+new", ok.stdout)


# --------------------------------------------------------------------------- chat


def test_chat_prompts_defaults_ctrl_d_and_the_menu_after_the_report(supa_db18: SupaDb,
                                                                    project: Path) -> None:
    migration(project, NAME, SQL)
    env = {**screen_env(), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "200"}
    child = pexpect.spawn(DBSAGE, ["chat", "--db", supa_db18.url], cwd=str(project), env=env,
                          encoding="utf-8", timeout=90, dimensions=(60, 200))
    child.logfile_read = sys.stdout
    chat_prompt = r"dara\[interactive\]>"
    child.expect(chat_prompt)
    child.sendline(f"*apply-migration {REL}")
    child.expect_exact("[confirm_migration_file]")  # Ctrl-D cancels it; the chat goes on
    child.expect_exact("[Y/n]:")
    child.sendeof()
    child.expect_exact("⏹ Cancelled: end of input at")
    child.expect(chat_prompt)
    assert not table_exists(supa_db18)

    child.sendline(f"*apply-migration {REL}")
    for checkpoint, hint, reply in (("confirm_migration_file", "[Y/n]", "Y"),
                                    ("confirm_database", "[y/n]", ""),
                                    ("confirm_database", "[y/n]", "y"),
                                    ("dry_run_done", "[y/N]", "N"),
                                    ("run_dry_run_now", "[Y/n]", ""),
                                    ("confirm_apply", "[Y/n]", "yes")):
        child.expect_exact(f"[{checkpoint}]")
        child.expect_exact(f"{hint}:")
        child.sendline(reply)
        if checkpoint == "confirm_database" and reply == "":
            child.expect_exact("Please answer y or n (this question has no default).")
    child.expect_exact("Migration Applied Successfully")  # the report, then the menu
    child.expect_exact("1. Run smoke tests  (*smoke-test)")  # in the chat's syntax
    child.expect_exact("[post_migration_menu]")
    child.expect_exact("[1/2/3/4] (4):")
    child.sendeof()  # end of input at the menu: done; the migration stays applied
    child.expect(chat_prompt)
    child.sendline("*exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert table_exists(supa_db18) and history(supa_db18) == ["20250101000000"]
