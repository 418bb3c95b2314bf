"""`dbsage analyze-hotpaths` / `*analyze-hotpaths` end to end, on clusters that preload
pg_stat_statements (PostgreSQL 15 with hypopg, the embedded 18; tests/hotpaths_fixtures.py),
as app_owner, not a superuser: the report file, the plans and the index advice, the same
result from the CLI and the chat, that a workload of writes leaves every row and sequence as
it was, and that no extension is created without --create-extension or a yes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from helpers import run_cli

from dbsage.agent.commands import Outcome, Session, execute, parse
from dbsage.agent.modes import ScriptedAsker

if TYPE_CHECKING:
    from hotpaths_fixtures import AppDb

pytest_plugins = ["hotpaths_fixtures"]
Conn = psycopg.Connection[Any]

SCHEMA = """
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
    INSERT INTO customers (name) SELECT 'c' || i FROM generate_series(1, 2000) i;
    CREATE TABLE orders (id bigserial PRIMARY KEY,
                         customer_id int NOT NULL REFERENCES customers (id),
                         status text NOT NULL, total numeric NOT NULL);
    INSERT INTO orders (customer_id, status, total)
        SELECT 1 + i % 2000, CASE WHEN i % 10 = 0 THEN 'open' ELSE 'done' END, i % 977
        FROM generate_series(1, 40000) i;
    ANALYZE customers; ANALYZE orders;
"""


@pytest.fixture
def owner(app_db: AppDb) -> Iterator[Conn]:
    with app_db.connect() as conn:
        yield conn


def _workload(conn: Conn) -> None:
    """Reads that want an index, and writes of every kind (sequences move)."""
    for i in range(1, 8):
        conn.execute("SELECT id, total FROM orders WHERE customer_id = %s", (i,))
        conn.execute("INSERT INTO orders (customer_id, status, total) VALUES (%s, 'open', 1)",
                     (i,))
        conn.execute("UPDATE orders SET total = total + 1 WHERE customer_id = %s AND "
                     "status = 'open'", (i,))
        conn.execute("DELETE FROM orders WHERE customer_id = %s AND total > 970", (i,))
        conn.execute("INSERT INTO customers (name) VALUES (%s) RETURNING id", (f"n{i}",))


def _state(conn: Conn) -> dict[str, Any]:
    """A checksum of every row of every table, and every sequence's last_value/is_called."""
    state: dict[str, Any] = {}
    for table in ("customers", "orders"):
        state[table] = conn.execute(
            f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
        ).fetchone()
    for (seq,) in conn.execute("SELECT format('%I.%I', schemaname, sequencename) "
                               "FROM pg_sequences WHERE schemaname = 'public' "
                               "ORDER BY 1").fetchall():
        state[seq] = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
    return state


def _url(db: AppDb) -> str:
    return db.cluster.url(db.name, "app_owner")


def run(line: str, db: AppDb, project: Path, **session: Any) -> Outcome:
    kw: dict[str, Any] = {"interactive": False, **session}
    return execute(parse(line), Session(db=_url(db), project_dir=project, **kw))


def _hot(outcome: Outcome) -> dict[str, Any]:
    assert outcome.report is not None and outcome.report.details is not None, outcome.text
    return outcome.report.details["hotpaths"]


def test_writes_the_report_advises_an_index_and_changes_no_data(app_db: AppDb, owner: Conn,
                                                                project: Path) -> None:
    owner.execute(SCHEMA)
    _workload(owner)
    before = _state(owner)
    out = run("*analyze-hotpaths --top 10", app_db, project)
    assert (out.ok, out.exit_code) == (True, 0), out.report
    assert _state(owner) == before  # the writes were planned, never run; nothing committed
    report = out.report
    assert report is not None
    path = project / report.files["report"]
    assert path.parent == project / "supabase" / "docs"
    assert path.name.startswith("performance-analysis-") and path.suffix == ".md"
    text = path.read_text()
    assert "## Recommended indexes" in text and "CREATE INDEX CONCURRENTLY" in text
    hot = _hot(out)
    assert hot["statistics"]["status"] == "ok"
    queries = {" ".join(q["query"].split())[:40]: q for q in hot["queries"]}
    select = next(q for k, q in queries.items() if k.startswith("SELECT id, total FROM orders"))
    assert select["plan"]["analyzed"] and select["plan"]["read_only"]
    assert any(f["kind"] == "seq_scan" for f in select["findings"])
    writes = [q for q in hot["queries"] if q["query"].lstrip().upper().startswith(
        ("INSERT", "UPDATE", "DELETE"))]
    assert writes and all(q["plan"] is None or not q["plan"]["analyzed"] for q in writes)
    advice = hot["indexes"]["advice"]
    index = next(a for a in advice if select["number"] in a["helps"])
    assert (index["relation"], index["columns"]) == ("public.orders", ["customer_id"])
    assert index["sql"].startswith("CREATE INDEX CONCURRENTLY")
    assert index["migration"].startswith("supabase/migrations/")
    assert index["migration"].endswith(
        "_add_orders_" + "_".join(index["columns"]) + "_index.sql")
    checks = {c["id"]: c["status"] for c in report.checks}
    assert checks["query_stats_available"] == "pass"


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    """What two analyses of the same workload must agree on (no timings, no file names)."""
    hot = doc["details"]["hotpaths"]
    return {"task": doc["task"], "status": doc["status"], "exit_code": doc["exit_code"],
            "statistics": hot["statistics"]["status"],
            "queries": sorted(q["query"] for q in hot["queries"]),
            "findings": sorted((q["query"], f["kind"], f["title"]) for q in hot["queries"]
                               for f in q["findings"]),
            "schema_findings": sorted(f["title"] for f in hot["schema_findings"]),
            "indexes": sorted(a["sql"] for a in hot["indexes"]["advice"]),
            "checks": [(c["id"], c["status"]) for c in doc["checks"]]}


def test_cli_and_chat_give_the_same_result(app_db: AppDb, owner: Conn, project: Path) -> None:
    owner.execute(SCHEMA)
    _workload(owner)
    cli = run_cli("analyze-hotpaths", "--top", "5", "--json", "--db", _url(app_db), cwd=project)
    assert cli.returncode == 0, cli.stderr
    chat = run("*analyze-hotpaths --top 5 --json", app_db, project)
    assert chat.exit_code == 0 and chat.as_json
    assert _stable(json.loads(cli.stdout)) == _stable(json.loads(chat.text))
    human = run_cli("analyze-hotpaths", "--top", "5", "--db", _url(app_db), cwd=project)
    assert human.returncode == 0, human.stderr
    assert "Hot paths" in human.stdout and "CREATE INDEX CONCURRENTLY" in human.stdout
    assert "No data was changed" in human.stdout
    assert len(list((project / "supabase" / "docs").glob("performance-analysis-*.md"))) == 3


def _extensions(db: AppDb) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute("SELECT extname FROM pg_extension ORDER BY 1")]


def test_no_extension_is_created_without_the_flag_or_a_yes(bare_db: AppDb,
                                                           project: Path) -> None:
    with bare_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY); SELECT * FROM t WHERE id = 1")
    extensions = _extensions(bare_db)
    quiet = run("*analyze-hotpaths", bare_db, project)  # no one to ask: yolo, never creates
    assert quiet.exit_code == 0 and _extensions(bare_db) == extensions
    hot = _hot(quiet)
    assert hot["statistics"]["status"] == "extension_missing"
    assert any("create extension" in s for s in hot["statistics"]["how_to_enable"])
    assert quiet.report is not None
    assert any("pg_stat_statements" in w for w in quiet.report.warnings)
    logged = [d for d in quiet.report.decisions if d["point"] == "create_extension"]
    assert logged and logged[0]["answer"] == "no"
    asker = ScriptedAsker({"create_extension": "no"})
    declined = run("*analyze-hotpaths", bare_db, project, interactive=True, asker=asker)
    assert declined.exit_code == 0 and _extensions(bare_db) == extensions
    assert [q.id for q in asker.asked] == ["create_extension"]
    assert asker.asked[0].default == "no"
    # yes (or the flag): created, here as the superuser (app_owner may not create it)
    admin = Session(db=bare_db.cluster.url(bare_db.name), project_dir=project, interactive=True,
                    asker=ScriptedAsker({"create_extension": "yes"}))
    yes = execute(parse("*analyze-hotpaths"), admin)
    assert yes.exit_code == 0, yes.report
    assert "pg_stat_statements" in _extensions(bare_db)
    assert _hot(yes)["statistics"]["extension_created"]


def test_create_extension_flag(bare_db: AppDb, project: Path) -> None:
    admin = Session(db=bare_db.cluster.url(bare_db.name), project_dir=project, interactive=False)
    out = execute(parse("*analyze-hotpaths --create-extension"), admin)
    assert out.exit_code == 0, out.report
    assert "pg_stat_statements" in _extensions(bare_db)
    refused = run("*analyze-hotpaths --create-extension", bare_db, project)  # now present
    assert refused.exit_code == 0


def test_post_migration_menu_verify_query_performance_runs_the_analysis(
        app_db: AppDb, owner: Conn, project: Path) -> None:
    from helpers import migration

    from dbsage.agent.runner import RunOptions, run_apply

    owner.execute(SCHEMA)
    _workload(owner)
    path = migration(project, "20250101000000_note.sql",
                     "alter table orders add column note text;\n")
    answers = {"confirm_migration_file": "yes", "confirm_database": "yes",
               "dry_run_done": "yes", "confirm_apply": "yes",
               "post_migration_menu": "3"}
    report = run_apply(path, RunOptions(mode="interactive", db=_url(app_db), project_dir=project,
                                        asker=ScriptedAsker(answers)))
    assert report.status == "applied", report.error
    assert report.follow_up == "*analyze-hotpaths"
    result = report.follow_up_result
    assert result is not None and result["passed"]
    assert (project / result["files"]["report"]).is_file()
    assert result["details"]["hotpaths"]["statistics"]["status"] == "ok"
    assert [c["id"] for c in result["checks"]] == ["query_stats_available"]


def test_dry_run_reports_hot_queries_whose_plan_gets_worse(app_db: AppDb, owner: Conn,
                                                           project: Path) -> None:
    from helpers import migration

    from dbsage.agent.runner import RunOptions, run_dry_run_task

    owner.execute(SCHEMA + "CREATE INDEX orders_customer_idx ON orders (customer_id);")
    for i in range(1, 30):
        owner.execute("SELECT id, total FROM orders WHERE customer_id = %s", (i,))
    before = _state(owner)
    path = migration(project, "20250101000000_drop_idx.sql", "DROP INDEX orders_customer_idx;\n")
    report = run_dry_run_task(path, RunOptions(mode="yolo", db=_url(app_db), project_dir=project))
    assert report.status == "passed", report.error
    assert report.details is not None
    hot = report.details["advisors"]["hot_queries"]
    assert hot["checked"] >= 1
    change = next(c for c in hot["changes"] if "FROM orders WHERE customer_id" in c["query"])
    assert change["lost_index_scans"] == ["orders_customer_idx"]
    assert change["cost_after"] > change["cost_before"]
    assert any("no longer uses orders_customer_idx" in w for w in report.warnings)
    assert _state(owner) == before
    with app_db.connect() as conn:  # rolled back: the index is still there
        assert conn.execute("SELECT to_regclass('orders_customer_idx')").fetchone() == (
            "orders_customer_idx",)
    safe = migration(project, "20250102000000_note.sql", "ALTER TABLE customers ADD note text;\n")
    clean = run_dry_run_task(safe, RunOptions(mode="yolo", db=_url(app_db), project_dir=project))
    assert clean.details is not None and clean.details["advisors"]["hot_queries"]["changes"] == []
