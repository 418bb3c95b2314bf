"""analyze-hotpaths tool layer on real PostgreSQL 15 and 18 with pg_stat_statements preloaded:
the hot statements, their plans (never changing data), findings, index advice (hypopg on 15)
and the report file. The workloads and the analyses run as app_owner, not a superuser."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from conftest import Db

from dbsage.tools.hotpaths import (
    MARKER,
    Finding,
    HotpathsError,
    NotPlannableError,
    QueryAnalysis,
    QueryPlan,
    Thresholds,
    analyze_hotpaths,
    duplicate_indexes,
    explain_query,
    find_issues,
    missing_fk_indexes,
    read_only_reason,
    render_report,
    rls_per_row_calls,
    statement_facts,
    top_queries,
    unused_indexes,
    write_report,
)

if TYPE_CHECKING:
    from hotpaths_fixtures import AppDb

pytest_plugins = ["hotpaths_fixtures"]  # the clusters with pg_stat_statements preloaded
Conn = psycopg.Connection[Any]

ORDERS = """
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
    INSERT INTO customers (name) SELECT 'c' || i FROM generate_series(1, 2000) i;
    CREATE TABLE orders (
        id bigserial PRIMARY KEY,
        customer_id int NOT NULL REFERENCES customers (id),
        status text NOT NULL,
        total numeric NOT NULL,
        note text
    );
    INSERT INTO orders (customer_id, status, total, note)
        SELECT 1 + i % 2000, CASE WHEN i % 10 = 0 THEN 'open' ELSE 'done' END, i % 977,
               repeat('x', 40)
        FROM generate_series(1, 60000) i;
    ANALYZE customers; ANALYZE orders;
"""


@pytest.fixture
def owner(app_db: AppDb) -> Iterator[Conn]:
    """app_owner's autocommit connection (asserted not to be a superuser)."""
    with app_db.connect() as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (False,)
        yield conn


def _run(conn: Conn, statement: str, values: Sequence[Sequence[Any]]) -> None:
    for params in values:
        conn.execute(statement, params)


def _reset_stats(db: AppDb) -> None:
    """Forget the set-up statements (the reset is for superusers only)."""
    db.as_superuser("SELECT pg_stat_statements_reset()")


def _analysis(analyses: Sequence[QueryAnalysis], starts: str) -> QueryAnalysis:
    found = [a for a in analyses if " ".join(a.stat.query.split()).startswith(starts)]
    assert len(found) == 1, (starts, [a.stat.query for a in analyses])
    return found[0]


def _kinds(findings: Sequence[Finding]) -> list[str]:
    return [f.kind for f in findings]


def _leftovers(conn: Conn, hypopg: bool) -> tuple[int, int]:
    """Prepared statements and hypothetical indexes left in the session."""
    prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    hypo = conn.execute("SELECT count(*) FROM hypopg()").fetchone() if hypopg else (0,)
    assert prepared is not None and hypo is not None
    return int(prepared[0]), int(hypo[0])


def _state(conn: Conn) -> dict[str, Any]:
    """Checksum of every user table's rows and last_value/is_called of every sequence."""
    state: dict[str, Any] = {}
    tables = conn.execute("""
        SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1""").fetchall()
    for (table,) in tables:
        row = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f"FROM {table} t").fetchone()
        state[table] = row
    for (seq,) in conn.execute("SELECT format('%I.%I', schemaname, sequencename) FROM "
                               "pg_sequences ORDER BY 1").fetchall():
        state[seq] = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
    return state


# --------------------------------------------------------------------------- the main path


def test_missing_index_gives_seq_scan_finding_and_index_advice(app_db: AppDb, owner: Conn,
                                                               tmp_path: Path) -> None:
    hypopg = app_db.cluster.hypopg
    if hypopg:
        app_db.as_superuser("CREATE EXTENSION hypopg")
    owner.execute(ORDERS)
    _reset_stats(app_db)
    _run(owner, "SELECT id, total FROM orders WHERE customer_id = %s", [(i,) for i in range(1, 31)])
    _run(owner, "SELECT id FROM orders WHERE id = %s", [(i,) for i in range(1, 31)])

    report = analyze_hotpaths(owner, n=5)

    assert report.hot.available and report.hot.status == "ok"
    assert report.hot.by_total[0].query == "SELECT id, total FROM orders WHERE customer_id = $1"
    hot = _analysis(report.queries, "SELECT id, total FROM orders WHERE customer_id = $1")
    assert hot.stat.calls == 30 and 0 < hot.stat.share <= 1
    assert hot.plan is not None and hot.plan.analyzed and hot.plan.read_only
    assert hot.plan.generic and hot.plan.parameters[0] is not None  # a real customer_id
    seq = [f for f in hot.findings if f.kind == "seq_scan"]
    assert len(seq) == 1
    assert (seq[0].relation, seq[0].columns) == ("public.orders", ("customer_id",))
    assert re.search(r"removed 59,9\d\d of 60,000 rows", seq[0].evidence), seq[0].evidence
    by_pk = _analysis(report.queries, "SELECT id FROM orders WHERE id = $1")
    assert by_pk.plan is not None and "seq_scan" not in _kinds(by_pk.findings)

    advice = [a for a in report.indexes.advice if a.relation == "public.orders"]
    assert len(advice) == 1
    assert advice[0].sql == ("CREATE INDEX CONCURRENTLY orders_customer_id_idx ON public.orders "
                             "(customer_id);")
    if hypopg:
        assert report.indexes.hypopg == "used"
        assert advice[0].verified, advice[0].verification
        assert advice[0].cost_before and advice[0].cost_after
        assert advice[0].cost_after < advice[0].cost_before / 2
    else:
        assert report.indexes.hypopg == "not_installed"
        assert not advice[0].verified and advice[0].verification.startswith("unverified")
        assert advice[0].cost_before is None
    # Nothing was built, nothing left in the session.
    indexes = owner.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'orders'").fetchall()
    assert indexes == [("orders_pkey",)]
    assert _leftovers(owner, hypopg) == (0, 0)

    path = write_report(report, tmp_path / "reports")
    assert re.fullmatch(r"performance-analysis-\d{14}\.md", path.name)
    text = path.read_text()
    for heading in ("# Performance analysis", "## Summary", "## Top statements by total time",
                    "## Top statements by mean time", "## Statement #1", "## Recommended indexes",
                    "## Next steps"):
        assert heading in text
    assert advice[0].sql in text and "Seq Scan on public.orders" in text
    assert "Rows Removed by Filter" in text
    assert not re.search(r"\{'|QueryStat\(|Finding\(|\bNone\b", text)

    # The advice is a working migration statement: once built, the plan uses it.
    owner.execute(advice[0].sql)
    after = explain_query(owner, "SELECT id, total FROM orders WHERE customer_id = $1")
    assert "seq_scan" not in _kinds(find_issues(after, owner))
    assert any(n.get("Index Name") == "orders_customer_id_idx" for n, _, _ in after.nodes())


def test_writes_are_planned_never_run(app_db: AppDb, owner: Conn) -> None:
    owner.execute("""
        CREATE TABLE accounts (id bigserial PRIMARY KEY, owner_id int NOT NULL,
                               balance int NOT NULL DEFAULT 0);
        CREATE TABLE audit (id serial PRIMARY KEY, account_id bigint, note text);
        CREATE SEQUENCE tickets;
        CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO audit (account_id, note) VALUES (NEW.id, TG_OP); RETURN NEW; END $$;
        CREATE TRIGGER accounts_audit AFTER INSERT OR UPDATE ON accounts
            FOR EACH ROW EXECUTE FUNCTION log_change();
        INSERT INTO accounts (owner_id, balance) SELECT i % 50, i FROM generate_series(1, 3000) i;
        ANALYZE accounts;
    """)
    writes: dict[str, tuple[str, list[tuple[Any, ...]]]] = {
        "INSERT INTO accounts (owner_id, balance) VALUES ($1, $2)":
            ("INSERT INTO accounts (owner_id, balance) VALUES (%s, %s)", [(i, i) for i in range(8)]),
        "UPDATE accounts SET balance = balance + $1 WHERE owner_id = $2":
            ("UPDATE accounts SET balance = balance + %s WHERE owner_id = %s",
             [(1, i) for i in range(8)]),
        "DELETE FROM accounts WHERE id = $1":
            ("DELETE FROM accounts WHERE id = %s", [(i,) for i in range(1, 9)]),
        "SELECT nextval($1)": ("SELECT nextval(%s)", [("tickets",)] * 8),
        "WITH moved AS (UPDATE accounts SET balance = $1 WHERE id = $2 RETURNING id) SELECT":
            ("WITH moved AS (UPDATE accounts SET balance = %s WHERE id = %s RETURNING id) "
             "SELECT count(*) FROM moved", [(0, i) for i in range(20, 28)]),
        "SELECT * FROM accounts WHERE owner_id = $1 FOR UPDATE":
            ("SELECT * FROM accounts WHERE owner_id = %s FOR UPDATE", [(i,) for i in range(8)]),
        "INSERT INTO audit (account_id, note) SELECT id, $1 FROM accounts WHERE balance > $2":
            ("INSERT INTO audit (account_id, note) SELECT id, %s FROM accounts WHERE balance > %s",
             [("bulk", 2990 + i) for i in range(8)]),
        "MERGE INTO accounts a USING (SELECT $1::int AS id) s ON a.id = s.id":
            ("MERGE INTO accounts a USING (SELECT %s::int AS id) s ON a.id = s.id "
             "WHEN MATCHED THEN UPDATE SET balance = a.balance - 1 "
             "WHEN NOT MATCHED THEN INSERT (owner_id) VALUES (0)", [(i,) for i in range(30, 38)]),
    }
    for statement, values in writes.values():
        _run(owner, statement, values)
    before = _state(owner)
    assert {"public.accounts", "public.audit", "public.tickets", "public.accounts_id_seq",
            "public.audit_id_seq"} <= set(before)

    report = analyze_hotpaths(owner, n=20)
    literal = [explain_query(owner, q) for q in (
        "INSERT INTO accounts (owner_id) SELECT owner_id FROM accounts",
        "UPDATE accounts SET balance = 0", "DELETE FROM audit", "SELECT nextval('tickets')",
        "SELECT setval('tickets', 1000)")]

    assert _state(owner) == before
    for starts in writes:
        analysis = _analysis(report.queries, starts)
        assert analysis.plan is not None, analysis.error
        assert not analysis.plan.analyzed and not analysis.plan.read_only, starts
        assert analysis.plan.write_reason and analysis.plan.execution_ms is None
    assert all(not p.analyzed and not p.read_only for p in literal)
    assert _leftovers(owner, False) == (0, 0)
    # The checksums do see a change when there is one.
    owner.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 100")
    owner.execute("SELECT nextval('tickets')")
    changed = _state(owner)
    assert changed["public.accounts"] != before["public.accounts"]
    assert changed["public.audit"] != before["public.audit"]  # the trigger ran
    assert changed["public.tickets"] != before["public.tickets"]


def test_read_only_select_runs_under_explain_analyze_in_a_read_only_transaction(
        app_db: AppDb, owner: Conn) -> None:
    owner.execute("""
        CREATE TABLE hits (id serial PRIMARY KEY, n int);
        CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE AS
            $$ INSERT INTO hits (n) VALUES (1) RETURNING id $$;
        CREATE VIEW bumping AS SELECT bump() AS id;
    """)
    before = _state(owner)
    plain = explain_query(owner, "SELECT count(*) FROM hits WHERE n > 0")
    assert plain.read_only and plain.analyzed and plain.execution_ms is not None
    assert "ANALYZE" in plain.explain and "BUFFERS" in plain.explain
    direct = explain_query(owner, "SELECT bump()")
    assert not direct.analyzed and "volatile function bump()" in (direct.write_reason or "")
    # The view hides the call from the statement's text: the read-only transaction stops it.
    hidden = explain_query(owner, "SELECT * FROM bumping")
    assert not hidden.analyzed and not hidden.read_only
    assert "tried to write" in (hidden.write_reason or "")
    assert _state(owner) == before


def test_parameters_get_a_generic_plan(app_db: AppDb, owner: Conn) -> None:
    owner.execute(ORDERS)
    query = "SELECT * FROM orders o WHERE o.customer_id = $1 AND status = $2 ORDER BY id LIMIT $3"
    estimated = explain_query(owner, query, analyze=False)
    assert estimated.generic and not estimated.analyzed and estimated.parameters == ()
    if app_db.cluster.major >= 16:
        assert estimated.explain.startswith("EXPLAIN (GENERIC_PLAN")
    else:
        assert "prepared statement (force_generic_plan)" in estimated.explain
    sampled = explain_query(owner, query)
    assert sampled.analyzed and sampled.generic
    assert sampled.parameters[0] is not None and sampled.parameters[1] in ("open", "done")
    assert sampled.parameters[2] == "100"
    given = explain_query(owner, query, params=["1", "open", "5"])
    assert given.analyzed and given.parameters == ("1", "open", "5")
    assert float(given.plan["Actual Rows"]) == 5  # customer 1 has 30 open orders: LIMIT 5
    none = explain_query(owner, query, params=["7", "open", "5"])
    assert float(none.plan["Actual Rows"]) == 0  # ... and customer 7 none
    write = explain_query(owner, "UPDATE orders SET total = $1 WHERE id = $2")
    assert write.generic and not write.analyzed
    with pytest.raises(HotpathsError, match="2 parameter"):
        explain_query(owner, "SELECT * FROM orders WHERE id = $1 AND total = $2", params=["1"])
    assert _leftovers(owner, False) == (0, 0)
    # A caller's open transaction is left open and usable.
    with owner.transaction():
        owner.execute("INSERT INTO customers (name) VALUES ('kept')")
        explain_query(owner, "SELECT * FROM customers WHERE name = $1")
    assert owner.execute("SELECT count(*) FROM customers WHERE name = 'kept'").fetchone() == (1,)


# --------------------------------------------------------------------------- pg_stat_statements


def test_missing_extension_says_how_to_enable_and_creates_nothing(bare_db: AppDb,
                                                                  tmp_path: Path) -> None:
    with bare_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY); SELECT * FROM t WHERE id = 1")
        extensions = conn.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall()
        hot = top_queries(conn)
        report = analyze_hotpaths(conn)
        assert conn.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall() == extensions
        with pytest.raises(HotpathsError, match="Could not create the pg_stat_statements"):
            top_queries(conn, create_extension=True)  # app_owner may not create it
    assert (hot.status, hot.available) == ("extension_missing", False)
    steps = " ".join(hot.how_to_enable)
    assert "create extension if not exists pg_stat_statements" in steps
    assert "shared_preload_libraries" not in steps  # this server preloads it already
    assert report.queries == () and not report.hot.available
    text = write_report(report, tmp_path).read_text()
    assert "## How to enable pg_stat_statements" in text and "create extension" in text

    with bare_db.connect(superuser=True) as conn:
        created = top_queries(conn, create_extension=True)
    assert created.available and created.extension_created


def test_not_preloaded_server(db: Db) -> None:
    with db.connect() as conn:
        missing = top_queries(conn)
        conn.execute("CREATE EXTENSION pg_stat_statements")  # as the superuser of conftest's server
        not_loaded = top_queries(conn)
    assert missing.status == "extension_missing"
    assert "shared_preload_libraries = 'pg_stat_statements'" in " ".join(missing.how_to_enable)
    assert "create extension" in " ".join(missing.how_to_enable)
    assert not_loaded.status == "not_preloaded" and not not_loaded.available
    steps = " ".join(not_loaded.how_to_enable)
    assert "shared_preload_libraries = 'pg_stat_statements'" in steps and "restart" in steps
    assert "create extension" not in steps


def test_catalog_and_own_statements_are_left_out(app_db: AppDb, owner: Conn) -> None:
    owner.execute("""
        CREATE SCHEMA dbsage; CREATE TABLE dbsage.runs (id int);
        CREATE SCHEMA supabase_migrations;
        CREATE TABLE supabase_migrations.schema_migrations (version text);
        CREATE TABLE items (id int PRIMARY KEY, label text);
        INSERT INTO items SELECT i, 'i' || i FROM generate_series(1, 100) i;
    """)
    _reset_stats(app_db)
    for _ in range(5):
        owner.execute("SELECT * FROM dbsage.runs")
        owner.execute("SELECT version FROM supabase_migrations.schema_migrations")
        owner.execute("SELECT relname FROM pg_class WHERE relname = 'items'")
        owner.execute("SELECT 1")
        owner.execute("SELECT label FROM items WHERE id = 3")
    first = top_queries(owner, n=10)
    analyze_hotpaths(owner, n=10)
    second = top_queries(owner, n=10)
    assert [s.query for s in first.by_total] == ["SELECT label FROM items WHERE id = $1"]
    assert first.excluded >= 4
    assert [s.query for s in second.by_total] == ["SELECT label FROM items WHERE id = $1"]
    assert not any(MARKER in s.query or "EXPLAIN" in s.query.upper() for s in second.statements)


# --------------------------------------------------------------------------- read-only analysis


READ_ONLY_CASES: list[tuple[str, str | None]] = [
    ("SELECT 1", None),
    ("SELECT * FROM t WHERE a = $1 LIMIT $2", None),
    ("SELECT random(), now(), count(*), gen_random_uuid() FROM t", None),
    ("SELECT stable_fn()", None),
    ("SELECT nextval('s')", "volatile function nextval()"),
    ("SELECT pg_catalog.setval('s', 1)", "volatile function pg_catalog.setval()"),
    ("SELECT writer()", "volatile function writer()"),
    ("SELECT nosuch_fn()", "cannot see"),
    ("SELECT * FROM t FOR UPDATE", "FOR UPDATE"),
    ("SELECT * FROM t FOR KEY SHARE", "FOR UPDATE/SHARE"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "data-modifying CTE"),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT"),
    ("SELECT * INTO t2 FROM t", "SELECT INTO"),
    ("UPDATE t SET a = 1", "UPDATE"),
    ("DELETE FROM t", "DELETE"),
    ("MERGE INTO t USING t u ON t.a = u.a WHEN MATCHED THEN DELETE", "MERGE"),
    ("SELECT a FROM t UNION SELECT (SELECT nextval('s'))", "nextval"),
]


def test_read_only_reason(db: Db) -> None:
    with db.connect() as conn:
        conn.execute("""
            CREATE TABLE t (a int); CREATE SEQUENCE s;
            CREATE FUNCTION stable_fn() RETURNS int LANGUAGE sql STABLE AS $$ SELECT 1 $$;
            CREATE FUNCTION writer() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
        """)
        found = {query: read_only_reason(conn, statement_facts(query))
                 for query, _ in READ_ONLY_CASES}
    wrong = [(query, reason, found[query]) for query, reason in READ_ONLY_CASES
             if (found[query] is None) != (reason is None)
             or (reason is not None and reason not in (found[query] or ""))]
    assert wrong == []


def test_statement_facts_refuses_what_has_no_plan() -> None:
    with pytest.raises(NotPlannableError):
        statement_facts("CREATE TABLE x (a int)")
    with pytest.raises(NotPlannableError):
        statement_facts("VACUUM t")
    with pytest.raises(HotpathsError, match="one statement"):
        statement_facts("SELECT 1; SELECT 2")
    with pytest.raises(HotpathsError, match="does not parse"):
        statement_facts("SELEC 1")
    facts = statement_facts("  /* c */ SELECT * FROM a x JOIN b.c ON x.i = c.i WHERE x.j = $3;  ")
    assert facts.text == "SELECT * FROM a x JOIN b.c ON x.i = c.i WHERE x.j = $3"
    assert facts.params == 3 and facts.relations == ((None, "a", "x"), ("b", "c", None))
    assert facts.param_targets == {3: ("column", "x", "j")}


# --------------------------------------------------------------------------- findings


def test_plan_findings(app_db: AppDb, owner: Conn) -> None:
    owner.execute(ORDERS + """
        CREATE TABLE pairs (a int, b int);
        INSERT INTO pairs SELECT i % 100, i % 100 FROM generate_series(1, 30000) i;
        ANALYZE pairs;
        CREATE TABLE regions (code int, label text);
        INSERT INTO regions SELECT i, 'r' || i FROM generate_series(1, 300) i;
        ANALYZE regions;
        ALTER TABLE customers ADD COLUMN region int;
        UPDATE customers SET region = 1 + id % 300;
        ANALYZE customers;
    """)
    # Correlated columns: the planner multiplies selectivities (est. 3 rows, actual 300).
    estimate = explain_query(owner, "SELECT * FROM pairs WHERE a = 1 AND b = 1")
    found = [f for f in find_issues(estimate, owner) if f.kind == "estimate"]
    assert len(found) == 1 and "actual 300" in found[0].evidence
    assert "CREATE STATISTICS ON a, b FROM public.pairs" in found[0].suggestion
    # A sort that does not fit work_mem.
    owner.execute("SET work_mem = '64kB'")
    spill = explain_query(owner, "SELECT * FROM orders ORDER BY note, total")
    temp = [f for f in find_issues(spill, owner) if f.kind == "temp_files"]
    assert len(temp) == 1 and "external merge" in temp[0].evidence
    owner.execute("RESET work_mem")
    # A nested loop over an unindexed inner table.
    owner.execute("SET enable_hashjoin = off; SET enable_mergejoin = off")
    loop = explain_query(owner, "SELECT c.name, r.label FROM customers c "
                                "JOIN regions r ON r.code = c.region")
    nested = [f for f in find_issues(loop, owner) if f.kind == "nested_loop"]
    assert len(nested) == 1 and nested[0].severity == "high"
    assert nested[0].relation == "public.regions" and nested[0].columns == ("code",)
    assert "ran 2,000 times" in nested[0].evidence
    owner.execute("RESET enable_hashjoin; RESET enable_mergejoin")
    # Reading a table larger than a quarter of shared_buffers (16MB) goes through a small
    # ring of buffers: nearly every page is a read.
    owner.execute("CREATE TABLE wide AS SELECT i, repeat('w', 300) AS pad "
                  "FROM generate_series(1, 50000) i; ANALYZE wide")
    scan = explain_query(owner, "SELECT count(*) FROM wide WHERE pad <> ''")
    reads = [f for f in find_issues(scan, owner) if f.kind == "shared_reads"]
    assert len(reads) == 1 and "Seq Scan on public.wide" in reads[0].evidence
    assert not [f for f in find_issues(scan, owner, thresholds=Thresholds(read_blocks=10**7))
                if f.kind == "shared_reads"]
    # The same plans without ANALYZE still show the seq scan, from the estimates.
    by_customer = explain_query(owner, "SELECT * FROM orders WHERE customer_id = 5",
                                analyze=False)
    assert not by_customer.analyzed
    seq = [f for f in find_issues(by_customer, owner) if f.kind == "seq_scan"]
    assert len(seq) == 1 and "estimated to keep 30 of ≈60,000 rows" in seq[0].evidence
    # A good plan has no findings.
    good = explain_query(owner, "SELECT * FROM orders WHERE id = 5")
    assert find_issues(good, owner, catalog=False) == []


def test_catalog_findings(app_db: AppDb, owner: Conn) -> None:
    owner.execute("""
        CREATE TABLE parent (id int PRIMARY KEY);
        CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id),
                            a int, b int, c int, d int, code text UNIQUE);
        CREATE INDEX child_a_1 ON child (a);
        CREATE INDEX child_a_2 ON child (a);
        CREATE INDEX child_b ON child (b);
        CREATE INDEX child_b_c ON child (b, c);
        CREATE INDEX child_d ON child (d);
        INSERT INTO child SELECT i, NULL, i, i, i, i, 'c' || i FROM generate_series(1, 500) i;
        ANALYZE child;
    """)
    owner.execute("SET enable_seqscan = off")
    owner.execute("SELECT * FROM child WHERE d = 3")
    owner.execute("SELECT pg_stat_force_next_flush()")  # the index scan counts now
    owner.execute("RESET enable_seqscan")

    fk = missing_fk_indexes(owner)
    assert [(f.relation, f.columns) for f in fk] == [("public.child", ("parent_id",))]
    dup = duplicate_indexes(owner)
    assert sorted(f.title for f in dup) == [
        "Index public.child_a_2 duplicates public.child_a_1",
        "Index public.child_b is a leading prefix of public.child_b_c"]
    assert all("DROP INDEX CONCURRENTLY" in f.suggestion for f in dup)
    unused = {f.title.split()[1] for f in unused_indexes(owner)}
    assert {"public.child_a_1", "public.child_b_c"} <= unused
    assert "public.child_d" not in unused  # scanned above
    assert not unused & {"public.child_pkey", "public.child_code_key"}
    # Scoped to other tables, nothing.
    assert missing_fk_indexes(owner, [("public", "nothing")]) == []
    assert missing_fk_indexes(owner, [("public", "parent")]) != []  # referenced table counts
    owner.execute("CREATE INDEX child_parent ON child (parent_id)")
    assert missing_fk_indexes(owner) == []
    assert "public.child_parent" not in {f.title.split()[1] for f in unused_indexes(owner)}


def test_rls_policies_calling_auth_uid_per_row(app_db: AppDb, owner: Conn) -> None:
    owner.execute("""
        CREATE SCHEMA auth;
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
            $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
        CREATE TABLE notes (id int, user_id uuid, body text);
        ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_notes ON notes FOR SELECT USING (auth.uid() = user_id);
        CREATE POLICY fast_notes ON notes FOR UPDATE USING ((SELECT auth.uid()) = user_id)
            WITH CHECK ((SELECT auth.uid()) = user_id);
        CREATE POLICY insert_notes ON notes FOR INSERT WITH CHECK (user_id = auth.uid());
    """)
    found = rls_per_row_calls(owner)
    assert sorted(f.title for f in found) == [
        "Policy insert_notes on public.notes calls auth.uid() per row",
        "Policy own_notes on public.notes calls auth.uid() per row"]
    for finding in found:  # the suggested ALTER POLICY is valid and fixes it
        statement = re.search(r"`(ALTER POLICY .*?;)`", finding.suggestion)
        assert statement is not None, finding.suggestion
        owner.execute(statement.group(1))
    assert rls_per_row_calls(owner) == []


def test_find_issues_on_a_given_plan(app_db: AppDb, owner: Conn) -> None:
    """Thresholds are applied to what the plan says (an EXPLAIN ANALYZE document as given)."""
    node = {"Node Type": "Nested Loop", "Join Type": "Inner", "Total Cost": 10.0, "Plan Rows": 10,
            "Actual Rows": 10, "Actual Loops": 1, "Shared Hit Blocks": 100,
            "Shared Read Blocks": 5000, "Plans": [
                {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Schema": "public",
                 "Relation Name": "a", "Alias": "a", "Plan Rows": 1500, "Actual Rows": 1500,
                 "Actual Loops": 1, "Shared Read Blocks": 5000, "Total Cost": 1.0},
                {"Node Type": "Index Scan", "Parent Relationship": "Inner", "Schema": "public",
                 "Relation Name": "b", "Alias": "b", "Index Name": "b_pkey", "Plan Rows": 1,
                 "Actual Rows": 1, "Actual Loops": 1500, "Shared Hit Blocks": 100,
                 "Total Cost": 1.0}]}
    plan = QueryPlan("SELECT 1", True, None, True, False, (), "EXPLAIN (ANALYZE)", node, 10.0, 0.1,
                     1.0, 150000)
    kinds = _kinds(find_issues(plan, owner, catalog=False))
    assert sorted(kinds) == ["nested_loop", "shared_reads"]
    quiet = Thresholds(read_blocks=6000, nested_loop_iterations=2000)
    assert find_issues(plan, owner, catalog=False, thresholds=quiet) == []


def test_hypopg_is_created_only_when_asked(app_db: AppDb, owner: Conn) -> None:
    owner.execute(ORDERS)
    _run(owner, "SELECT id FROM orders WHERE customer_id = %s", [(i,) for i in range(1, 6)])
    extensions = owner.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall()
    plain = analyze_hotpaths(owner)
    asked = analyze_hotpaths(owner, create_extension=True)  # app_owner may not create hypopg
    assert owner.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall() == extensions
    expected = "not_created" if app_db.cluster.hypopg else "not_installed"
    assert plain.indexes.hypopg == asked.indexes.hypopg == expected
    assert plain.indexes.advice and not any(a.verified for a in plain.indexes.advice)
    assert plain.indexes.note in plain.next_steps
    if app_db.cluster.hypopg:
        assert "Could not create the hypopg extension" in asked.indexes.note
        with app_db.connect(superuser=True) as conn:
            created = analyze_hotpaths(conn, create_extension=True)
        assert created.indexes.hypopg == "used"
        assert any(a.verified for a in created.indexes.advice)
        assert ("hypopg",) in owner.execute("SELECT extname FROM pg_extension").fetchall()


def test_report_file_is_never_overwritten(app_db: AppDb, owner: Conn, tmp_path: Path) -> None:
    owner.execute("CREATE TABLE a (id int)")
    owner.execute("SELECT * FROM a WHERE id = 1")
    report = analyze_hotpaths(owner)
    with app_db.connect(autocommit=False) as conn:  # a connection not in autocommit mode
        analyze_hotpaths(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    first = write_report(report, tmp_path)
    second = write_report(report, tmp_path)
    assert first != second and second.name.endswith("-2.md")
    assert first.read_text() == second.read_text() == render_report(report)
