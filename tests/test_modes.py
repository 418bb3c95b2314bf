"""The task engine in its three modes, driven with scripted answers on a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Db
from helpers import lock_is_free, migration

from dbsage.agent.modes import Question, ScriptedAsker, load_answers
from dbsage.agent.runner import RunOptions, known_checks, load_definition, run_apply
from dbsage.tools.errors import ConfigError

SQL = "create table public.items (id int primary key, name text);\n" \
      "alter table public.items enable row level security;\n" \
      "insert into public.items values (1, 'a');\n"
INTERACTIVE = {"confirm_migration_file": "yes", "confirm_database": "yes", "dry_run_done": "yes",
               "confirm_apply": "yes", "post_migration_menu": "4"}


def run(db: Db, project: Path, path: Path, mode: str, answers: dict[str, str] | None = None,
        **flags: bool) -> tuple[object, ScriptedAsker]:
    asker = ScriptedAsker(answers or {})
    report = run_apply(path, RunOptions(mode=mode, db=db.url, project_dir=project, asker=asker,
                                        flags=dict(flags)))
    return report, asker


def table_exists(db: Db, name: str = "public.items") -> bool:
    return bool(db.scalar("select to_regclass(%s) is not null", (name,)))


def test_shipped_apply_definition_loads_with_the_real_registries() -> None:
    d = load_definition("apply-migration")
    assert {i.check for i in d.checklist_items} <= known_checks()
    assert [s.id for s in d.steps][-1] == "release_lock"


def test_yolo_asks_nothing_and_logs_every_decision(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)
    report, asker = run(db, project, path, "yolo")
    assert report.status == "applied", report.error  # type: ignore[attr-defined]
    assert asker.asked == [] and report.prompts == 0  # type: ignore[attr-defined]
    points = [d["point"] for d in report.decisions]  # type: ignore[attr-defined]
    assert points == ["confirm_migration_file", "confirm_database", "dry_run_done", "confirm_apply",
                      "post_migration_menu"]
    assert all(d["why"] and d["by"] in ("rule", "record") for d in report.decisions)  # type: ignore[attr-defined]
    log = json.loads((project / report.files["decisions"]).read_text())  # type: ignore[attr-defined]
    assert log["mode"] == "yolo" and log["decisions"] == report.decisions  # type: ignore[attr-defined]
    # No separate dry-run: the statements ran once, in the transaction that commits them
    # (an error would have rolled it all back), and the log says why.
    gate = next(d for d in log["decisions"] if d["point"] == "dry_run_done")
    assert gate["answer"] == "skipped" and "twice" in gate["why"]
    if db.scalar("select to_regclass('dbsage.dry_run_log') is not null"):
        assert db.scalar("select count(*) from dbsage.dry_run_log") == 0


def test_yolo_refuses_destructive_statements_without_the_flag(db18: Db, project: Path) -> None:
    db18.execute("create table public.old (id int); insert into public.old values (1)")
    path = migration(project, "20250101000000_drop.sql", "drop table public.old;\n")
    report, _ = run(db18, project, path, "yolo")
    assert report.status == "refused"  # type: ignore[attr-defined]
    assert "destroys data" in report.error["message"]  # type: ignore[attr-defined]
    assert "line 1: drop table public.old" in report.error["message"]  # type: ignore[attr-defined]
    assert table_exists(db18, "public.old")
    refusal = report.decisions[-1]  # type: ignore[attr-defined]
    assert refusal["point"] == "override_no_destructive_statements"
    assert "--allow-destructive not given" in refusal["why"]

    allowed, _ = run(db18, project, path, "yolo", allow_destructive=True)
    assert allowed.status == "applied", allowed.error  # type: ignore[attr-defined]
    assert not table_exists(db18, "public.old")
    assert any("allowed by --allow-destructive" in d["why"] for d in allowed.decisions)  # type: ignore[attr-defined]


def test_yolo_refuses_out_of_order_unless_allowed(db18: Db, project: Path) -> None:
    newer = migration(project, "20250102000000_b.sql", "create table b (id int);")
    older = migration(project, "20250101000000_a.sql", "create table a (id int);")
    assert run(db18, project, newer, "yolo")[0].status == "applied"  # type: ignore[attr-defined]
    refused, _ = run(db18, project, older, "yolo")
    assert refused.status == "refused"  # type: ignore[attr-defined]
    assert "out of order" in refused.error["message"]  # type: ignore[attr-defined]
    assert "--allow-out-of-order" in refused.error["hint"]  # type: ignore[attr-defined]
    ok, _ = run(db18, project, older, "yolo", allow_out_of_order=True)
    assert ok.status == "applied"  # type: ignore[attr-defined]


def test_interactive_asks_between_5_and_10_checkpoints(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)
    report, asker = run(db, project, path, "interactive", INTERACTIVE)
    assert report.status == "applied", report.error  # type: ignore[attr-defined]
    ids = [q.id for q in asker.asked]
    assert ids == ["confirm_migration_file", "confirm_database", "dry_run_done", "confirm_apply",
                   "post_migration_menu"]
    assert 5 <= report.prompts <= 10  # type: ignore[attr-defined]
    assert all(q.explanation for q in asker.asked)
    confirm = asker.asked[3]
    assert "line 1" in confirm.detail and "ACCESS EXCLUSIVE" in confirm.detail
    assert str(path) in asker.asked[0].text
    assert db.url.split("@")[0] not in asker.asked[1].text or "***" not in db.url


def test_interactive_skips_the_dry_run_question_when_one_is_on_record(db18: Db,
                                                                     project: Path) -> None:
    from dbsage.tools.connection import connect
    from dbsage.tools.dryrun import dry_run_migration
    from dbsage.tools.lock import acquire_lock, release_lock
    from dbsage.tools.sqlfile import read_migration

    path = migration(project, "20250101000000_items.sql", SQL)
    with connect(db18.url, autocommit=True) as conn:
        acquire_lock(conn)
        assert dry_run_migration(conn, read_migration(path)).passed
        release_lock(conn)
    report, asker = run(db18, project, path, "interactive",
                        {k: v for k, v in INTERACTIVE.items() if k != "dry_run_done"})
    assert report.status == "applied", report.error  # type: ignore[attr-defined]
    assert "dry_run_done" not in [q.id for q in asker.asked]
    assert report.prompts == 4  # type: ignore[attr-defined]


def test_answering_no_dry_run_offers_one_and_declining_stops(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)
    report, asker = run(db18, project, path, "interactive",
                        {**INTERACTIVE, "dry_run_done": "no", "run_dry_run_now": "no"})
    assert report.status == "refused"  # type: ignore[attr-defined]
    assert f"*dry-run {path}" in report.error["message"]  # type: ignore[attr-defined]
    assert [q.id for q in asker.asked][-2:] == ["dry_run_done", "run_dry_run_now"]
    assert not table_exists(db18)
    assert report.ts is None and lock_is_free(db18)  # type: ignore[attr-defined]


def test_answering_no_dry_run_then_yes_runs_one_and_applies(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)
    report, _ = run(db18, project, path, "interactive",
                        {**INTERACTIVE, "dry_run_done": "no", "run_dry_run_now": "yes"})
    assert report.status == "applied", report.error  # type: ignore[attr-defined]
    assert db18.scalar("select count(*) from dbsage.dry_run_log where passed") == 1
    assert table_exists(db18)


def test_yes_never_claims_a_dry_run_passed_it_runs_one(db18: Db, project: Path) -> None:
    """--yes answers questions; it does not assert that a check happened: with no passing
    dry-run on record, one runs, and the decision log says so (not "the user said yes")."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.runner import RunOptions, run_apply

    path = migration(project, "20250101000000_items.sql", SQL)
    report = run_apply(path, RunOptions(mode="interactive", db=db18.url, project_dir=project,
                                        asker=YesAsker()))
    assert report.status == "applied", report.error
    gate = next(d for d in report.decisions if d["point"] == "dry_run_done")
    assert gate["answer"] == "run" and gate["by"] == "rule" and "--yes" in gate["why"]
    assert db18.scalar("select count(*) from dbsage.dry_run_log where passed") == 1


def test_post_menu_runs_the_smoke_test(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)
    report, _ = run(db18, project, path, "interactive", {**INTERACTIVE, "post_migration_menu": "1"})
    assert report.follow_up == "*smoke-test"  # type: ignore[attr-defined]
    result = report.follow_up_result  # type: ignore[attr-defined]
    assert result and {c["id"] for c in result["checks"]} >= {"invalid_indexes", "rls_disabled"}


def test_a_failing_blocker_precondition_stops_before_the_lock(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)
    with db18.connect() as holder:
        holder.execute("select pg_advisory_lock(hashtext('dbsage:migrate'))")
        report, asker = run(db18, project, path, "interactive", INTERACTIVE)
    assert report.status == "refused" and report.exit_code == 3  # type: ignore[attr-defined]
    assert report.error["check"] == "lock_available"  # type: ignore[attr-defined]
    assert asker.asked == []  # stopped before the first checkpoint
    steps = [s["step"] for s in report.steps]  # type: ignore[attr-defined]
    assert "acquire_lock" not in steps and report.ts is None  # type: ignore[attr-defined]
    statuses = {c["id"]: c["status"] for c in report.checks}  # type: ignore[attr-defined]
    assert statuses["lock_available"] == "fail" and statuses["file_parses"] == "pass"


def test_preflight_asks_everything_up_front_and_nothing_after(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)
    seen_table: list[bool] = []
    asker = ScriptedAsker({"confirm_migration_file": "yes", "confirm_database": "yes",
                           "confirm_apply": "yes"},
                          on_ask=lambda q: seen_table.append(table_exists(db)))
    report = run_apply(path, RunOptions(mode="preflight", db=db.url, project_dir=project,
                                        asker=asker))
    assert report.status == "applied", report.error
    assert [q.id for q in asker.asked] == ["confirm_migration_file", "confirm_database",
                                           "confirm_apply"]
    assert seen_table == [False, False, False]
    assert report.prompts == 3
    assert all(d["by"] in ("user", "plan", "record") for d in report.decisions)
    plan_md = project / report.files["plan_md"]
    plan = json.loads((project / report.files["plan_json"]).read_text())
    assert plan["dry_run"]["passed"] is True and plan["checksum"]
    assert [s["lock_level"] for s in plan["statements"]][:1] == ["ACCESS EXCLUSIVE"]
    row = next(x for x in plan_md.read_text().splitlines() if x.startswith("| 1 | "))
    assert "| ACCESS EXCLUSIVE |" in row and "| new |" in row  # a table it creates: no size


def test_preflight_stops_when_the_file_changes_after_the_plan(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)

    def edit_file(q: Question) -> None:
        if q.id == "confirm_apply":
            path.write_text(SQL + "drop table public.items;\n")

    asker = ScriptedAsker({"confirm_migration_file": "yes", "confirm_database": "yes",
                           "confirm_apply": "yes"}, on_ask=edit_file)
    report = run_apply(path, RunOptions(mode="preflight", db=db18.url, project_dir=project,
                                        asker=asker))
    assert report.status == "refused"
    assert "changed after the plan" in report.error["message"]  # type: ignore[index]
    assert not table_exists(db18)
    assert lock_is_free(db18)


def test_preflight_stops_when_the_schema_changes_after_the_plan(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_items.sql", SQL)

    def change_schema(q: Question) -> None:
        if q.id == "confirm_apply":
            db18.execute("create table public.sneaky (id int)")

    asker = ScriptedAsker({"confirm_migration_file": "yes", "confirm_database": "yes",
                           "confirm_apply": "yes"}, on_ask=change_schema)
    report = run_apply(path, RunOptions(mode="preflight", db=db18.url, project_dir=project,
                                        asker=asker))
    assert report.status == "refused"
    assert "schema changed after the plan" in report.error["message"]  # type: ignore[index]
    assert not table_exists(db18)


def test_answers_file_must_map_ids_to_answers(tmp_path: Path) -> None:
    good = tmp_path / "a.yaml"
    good.write_text("confirm_apply: yes\npost_migration_menu: 4\n")
    asker = load_answers(good)
    assert asker.answers == {"confirm_apply": "yes", "post_migration_menu": "4"}
    bad = tmp_path / "b.yaml"
    bad.write_text("- yes\n- no\n")
    with pytest.raises(ConfigError, match="map checkpoint ids"):
        load_answers(bad)
    with pytest.raises(ConfigError, match="No scripted answer for checkpoint 'x'"):
        asker.ask(Question("x", "?"))


def test_plan_counts_the_rows_a_destructive_statement_puts_at_stake(db18: Db,
                                                                   project: Path) -> None:
    from dbsage.agent.runner import run_plan

    db18.execute("create table public.old (id int); insert into public.old select "
                 "generate_series(1, 7)")
    path = migration(project, "20250101000000_drop.sql", "drop table public.old;\n")
    report = run_plan(path, RunOptions(db=db18.url, project_dir=project,
                                       flags={"allow_destructive": True}))
    assert report.status == "planned", report.error
    plan = json.loads((project / report.files["plan_json"]).read_text())
    assert plan["destructive"] == [{"kind": "drop_table", "table": "public.old", "columns": [],
                                    "line": 1, "rows_at_stake": 7}]
    assert table_exists(db18, "public.old")  # planning changes nothing


def test_answers_y_n_in_any_case_and_safe_defaults() -> None:
    from dbsage.agent.modes import answer_hint, match_answer

    target = Question("confirm_database", "Right target?")  # no default
    risky = Question("override_x", "Destroys data. Continue anyway?", default="no")
    plain = Question("confirm_apply", "Apply?", default="yes")
    assert [match_answer(x, plain) for x in ("y", "Y", "yes", "YES", " Yes ", "n", "No", "NO")] \
        == ["yes"] * 5 + ["no"] * 3
    assert match_answer("", plain) == "yes" and match_answer("", risky) == "no"
    assert match_answer("", target) is None  # asked again
    assert match_answer("ye", plain) is None and match_answer("maybe", plain) is None
    assert [answer_hint(q) for q in (plain, risky, target)] == ["[Y/n]", "[y/N]", "[y/n]"]
    menu = Question("menu", "Next?", choices=("1", "2", "3", "4"), default="4")
    assert answer_hint(menu) == "[1/2/3/4] (4)" and match_answer("", menu) == "4"
    assert match_answer("2", menu) == "2" and match_answer("y", menu) is None


def test_the_preflight_form_takes_one_line_of_answers() -> None:
    from dbsage.agent.modes import form_text, match_form

    qs = [Question("override_x", "Destroys data. Continue anyway?", detail="12 row(s) at stake",
                   default="no"),
          Question("confirm_database", "Right target?"),
          Question("confirm_apply", "Apply?", default="yes")]
    text = form_text(qs)
    assert "  1. Destroys data. Continue anyway?  [y/N]\n       12 row(s) at stake" in text
    assert "  2. Right target?  [y/n]" in text and "  3. Apply?  [Y/n]" in text
    assert match_form("y", qs) == ["yes", "yes", "yes"]
    assert match_form("N", qs) == ["no", "no", "no"]
    assert match_form("n Y yes", qs) == ["no", "yes", "yes"]
    assert match_form("", qs) == "Question(s) 2 have no default: answer y for all, or one " \
                                 "answer per question."
    assert "3 question(s), 2 answer(s)" in str(match_form("y y", qs))
    assert match_form("y maybe y", qs) == "Answer 2 is not y or n."
    only_defaults = [qs[0], qs[2]]
    assert match_form("", only_defaults) == ["no", "yes"]  # Enter: the safe defaults


def test_preflight_asks_the_form_once_and_then_answers_from_it() -> None:
    from dbsage.agent.modes import PreflightPolicy

    forms: list[tuple[list[str], str]] = []

    class FormAsker:
        def ask(self, question: Question) -> str:
            raise AssertionError(f"asked one by one: {question.id}")

        def ask_form(self, questions: list[Question], intro: str = "") -> list[str]:
            forms.append(([q.id for q in questions], intro))
            return ["yes" for _ in questions]

    policy = PreflightPolicy(asker=FormAsker())
    override = Question("override_no_destructive_statements", "Destroys data. Continue?",
                        default="no")
    assert policy.override(override, "allow_destructive") is True  # deferred to the form
    answers = policy.ask_batch([Question("confirm_database", "Right target?")], "THE PLAN")
    assert forms == [(["override_no_destructive_statements", "confirm_database"], "THE PLAN")]
    assert answers == {"override_no_destructive_statements": "yes", "confirm_database": "yes"}
    assert policy.checkpoint(Question("confirm_database", "Right target?")) == "yes"
    assert [d.by for d in policy.decisions] == ["user", "user", "plan"] and policy.prompts == 2


def test_an_override_flag_decides_without_asking_in_interactive(db18: Db, project: Path) -> None:
    db18.execute("create table public.items (id int primary key, note text);"
                 "insert into public.items values (1, 'x')")
    path = migration(project, "20250101000000_drop.sql", "alter table public.items drop column note;\n")
    report, asker = run(db18, project, path, "interactive", INTERACTIVE, allow_destructive=True)
    assert report.status == "applied", report.error  # type: ignore[attr-defined]
    assert not [q for q in asker.asked if q.id.startswith("override_")]
    flag = next(d for d in report.decisions  # type: ignore[attr-defined]
                if d["point"] == "override_no_destructive_statements")
    assert flag["answer"] == "yes" and "--allow-destructive" in flag["why"] and flag["by"] == "rule"
