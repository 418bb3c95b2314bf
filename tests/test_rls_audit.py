"""The RLS audit and the impersonation matrix (tools/rls.py) on Supabase-shaped PostgreSQL
18 and 15.

tests/advisor_fixtures/access.sql: todos with owner policies (user A owns 2 rows, B 3),
notices (public read only), projects (one FOR ALL policy by a tenant claim), tags (RLS off),
secrets (RLS forced, no policy, no grant), flags (only a restrictive policy). The tables
belong to Supabase's postgres role (no superuser), which is the role the probes start from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from supabase_shaped import SupaDb, SupaServer
from test_advisors import OWNER, USER_A, USER_B, connect_as, create_login_role, prepare, supabase_db

from dbsage.tools.rls import (
    AccessMatrix,
    CommandProbe,
    RlsError,
    RoleProbe,
    audit_rls,
    probe_access,
)

USER_C = "cccccccc-0000-0000-0000-000000000003"  # signed in, but not in auth.users
TABLES = ["public.flags", "public.notices", "public.projects", "public.secrets", "public.tags",
          "public.todos"]
ANON = RoleProbe.anon()
USER_A_PROBE = RoleProbe.authenticated(sub=USER_A, label="A")
USER_C_PROBE = RoleProbe.authenticated(sub=USER_C, claims={"app_metadata": {"tenant": "t1"}},
                                       label="C")
SERVICE = RoleProbe.service_role()
PROBES = [ANON, USER_A_PROBE, USER_C_PROBE, SERVICE]


@pytest.fixture(scope="module", params=["supa18", "supa15"])
def access(request: pytest.FixtureRequest) -> Iterator[SupaDb]:
    """access.sql on each server (the probes never change it: see the read-only tests)."""
    server: SupaServer = request.getfixturevalue(request.param)
    with supabase_db(server, "access.sql") as sdb:
        yield sdb


@pytest.fixture(scope="module")
def matrix(access: SupaDb) -> AccessMatrix:
    with access.connect() as conn:
        return probe_access(conn, ["public"], PROBES)


@pytest.fixture
def fresh_access(supa_db: SupaDb) -> SupaDb:
    prepare(supa_db, "access.sql")
    return supa_db


# --------------------------------------------------------------------------- the audit


def test_audit_flags_and_coverage(access: SupaDb) -> None:
    with access.connect() as conn:
        audit = audit_rls(conn, ["public"])
    assert [t.qualified for t in audit.tables] == TABLES
    got = {t.qualified: (t.rls_enabled, t.rls_forced, t.covered, t.uncovered, t.flags)
           for t in audit.tables}
    all4 = ("SELECT", "INSERT", "UPDATE", "DELETE")
    assert got == {
        "public.todos": (True, False, all4, (), ()),
        "public.projects": (True, False, all4, (), ()),  # one FOR ALL
        "public.notices": (True, False, ("SELECT",), ("INSERT", "UPDATE", "DELETE"),
                           ("incomplete_coverage",)),
        "public.flags": (True, False, (), all4, ("incomplete_coverage",)),  # restrictive only
        "public.secrets": (True, True, (), all4, ("rls_on_no_policy",)),
        "public.tags": (False, False, (), all4, ("rls_off",)),
    }
    assert all(t.owner == OWNER and t.extension is None for t in audit.tables)
    s = audit.summary
    assert (s.tables, s.rls_enabled, s.rls_forced, s.policies) == (6, 5, 1, 7)
    assert (s.rls_off, s.rls_on_no_policy, s.incomplete_coverage, s.fully_covered) == (1, 1, 2, 2)


def test_audit_reports_each_policy(access: SupaDb) -> None:
    with access.connect() as conn:
        audit = audit_rls(conn, ["public"])
    todos = {p.name: p for p in audit.table("public.todos").policies}
    assert sorted(todos) == ["todos_delete", "todos_insert", "todos_select", "todos_update"]
    update = todos["todos_update"]
    assert (update.command, update.permissive, update.roles) == ("UPDATE", True, ("authenticated",))
    assert update.using == update.with_check == "(( SELECT auth.uid() AS uid) = user_id)"
    assert todos["todos_insert"].using is None and todos["todos_delete"].with_check is None
    (flag,) = audit.table("public.flags").policies
    assert (flag.command, flag.permissive) == ("SELECT", False)
    (notice,) = audit.table("public.notices").policies
    assert notice.roles == ("anon", "authenticated") and notice.using == "true"
    (tenant,) = audit.table("public.projects").policies
    assert tenant.command == "ALL"
    with access.connect() as conn:
        assert audit_rls(conn, ["no_such_schema"]).tables == ()


# --------------------------------------------------------------------------- the matrix


def _cells(matrix: AccessMatrix, table: str, role: str) -> list[tuple[str, int | None]]:
    cell = matrix.cell(table, role)
    return [(p.outcome, p.rows) for p in (cell.select, cell.insert, cell.update, cell.delete)]


def test_the_matrix_has_every_table_and_role(matrix: AccessMatrix) -> None:
    assert matrix.tables == tuple(TABLES)
    assert matrix.roles == ("anon", "A", "C", "service_role")
    assert len(matrix.cells) == len(TABLES) * len(PROBES)
    # the owner sees every row, except where RLS is forced on it too (no policy: none)
    assert dict(matrix.total_rows) == {"public.flags": 0, "public.notices": 3,
                                       "public.projects": 3, "public.secrets": 0,
                                       "public.tags": 2, "public.todos": 5}


def test_owner_policies_on_todos(matrix: AccessMatrix) -> None:
    """Hand-computed: anon sees and touches nothing and cannot insert; A sees and may change
    only A's 2 rows and insert their own; service_role (BYPASSRLS) reaches all 5."""
    allowed = "allowed"
    assert _cells(matrix, "public.todos", "anon") == [
        (allowed, 0), ("denied_rls", None), (allowed, 0), (allowed, 0)]
    assert _cells(matrix, "public.todos", "A") == [
        (allowed, 2), (allowed, 1), (allowed, 2), (allowed, 2)]
    assert _cells(matrix, "public.todos", "service_role") == [
        (allowed, 5), ("not_testable", None), (allowed, 5), (allowed, 5)]
    rls = matrix.result("public.todos", "anon", "INSERT")
    assert rls.sqlstate == "42501" and "row-level security" in rls.detail
    # no sub for service_role: the NOT NULL owner column gets a placeholder the FK refuses
    no_sub = matrix.result("public.todos", "service_role", "INSERT")
    assert no_sub.sqlstate == "23503" and no_sub.detail.startswith("constraint:")


def test_a_signed_in_user_missing_from_auth_users(matrix: AccessMatrix) -> None:
    """C passes the policy (sub = user_id) but not the foreign key: not testable, not denied."""
    assert _cells(matrix, "public.todos", "C") == [
        ("allowed", 0), ("not_testable", None), ("allowed", 0), ("allowed", 0)]
    assert matrix.result("public.todos", "C", "INSERT").sqlstate == "23503"


def test_public_read_tenant_claims_rls_off_and_no_grant(matrix: AccessMatrix) -> None:
    for role in ("anon", "A", "C"):
        assert _cells(matrix, "public.notices", role) == [
            ("allowed", 3), ("denied_rls", None), ("allowed", 0), ("allowed", 0)]
        assert _cells(matrix, "public.tags", role) == [
            ("allowed", 2), ("allowed", 1), ("allowed", 2), ("allowed", 2)]
        assert [p.outcome for p in (matrix.cell("public.secrets", role).select,
                                    matrix.cell("public.secrets", role).delete)] == [
            "denied_privilege", "denied_privilege"]
        # restrictive only: nothing passes
        assert matrix.result("public.flags", role, "SELECT") == CommandProbe("SELECT", "allowed", 0)
    # C's claim app_metadata.tenant = t1 reaches t1's 2 projects; A has no tenant
    assert _cells(matrix, "public.projects", "C")[0::2] == [("allowed", 2), ("allowed", 2)]
    assert _cells(matrix, "public.projects", "C")[3] == ("allowed", 2)
    assert _cells(matrix, "public.projects", "A")[0] == ("allowed", 0)
    # the probe row's tenant ('x') is not C's: refused by the WITH CHECK
    assert matrix.result("public.projects", "C", "INSERT").outcome == "denied_rls"
    secret = matrix.result("public.secrets", "anon", "SELECT")
    assert secret.sqlstate == "42501" and "permission denied" in secret.detail
    assert _cells(matrix, "public.secrets", "service_role") == [
        ("allowed", 0), ("allowed", 1), ("allowed", 0), ("allowed", 0)]


def test_given_values_make_the_probe_row_pass_a_policy(access: SupaDb) -> None:
    with access.connect() as conn:
        m = probe_access(conn, ["public"], [USER_C_PROBE], tables=["public.projects"],
                         values={"public.projects": {"tenant": "t1", "id": "99"}})
    assert m.tables == ("public.projects",)
    assert m.result("public.projects", "C", "INSERT") == CommandProbe("INSERT", "allowed", 1)


def test_role_probes_carry_the_claims() -> None:
    assert json.loads(USER_A_PROBE.claims or "") == {"sub": USER_A}
    assert USER_A_PROBE.claim_set == {"role": "authenticated", "sub": USER_A}
    assert USER_C_PROBE.claim_set["app_metadata"] == {"tenant": "t1"}
    assert RoleProbe.authenticated(sub=USER_B).name == f"authenticated sub={USER_B}"
    assert RoleProbe.authenticated().claims is None
    assert (ANON.name, SERVICE.name, ANON.sub, ANON.claim_set) == (
        "anon", "service_role", None, {"role": "anon"})


def test_the_insert_records_the_request(access: SupaDb) -> None:
    """The probe row of A carries A's id from auth.uid() (a column default), the claims and
    the role, seen from inside the probe by a trigger that reports them (NOTICE)."""
    notices: list[str] = []
    with access.connect(admin=True) as admin:
        admin.execute("""
            CREATE FUNCTION public.report_request() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE NOTICE 'probe %|%|%', auth.uid(), current_user,
                current_setting('request.jwt.claim.role', true);
              RETURN NEW;
            END $$""")
        admin.execute("CREATE TRIGGER report BEFORE INSERT ON public.todos FOR EACH ROW "
                      "EXECUTE FUNCTION public.report_request()")
    try:
        with access.connect() as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            probe_access(conn, ["public"], [USER_A_PROBE, SERVICE], tables=["public.todos"])
    finally:
        with access.connect(admin=True) as admin:
            admin.execute("DROP TRIGGER report ON public.todos; "
                          "DROP FUNCTION public.report_request()")
    assert notices == [f"probe {USER_A}|authenticated|authenticated",
                       "probe <NULL>|service_role|service_role"]


# --------------------------------------------------------------------------- read-only


def _state(sdb: SupaDb) -> dict[str, Any]:
    """Every table's rows (sorted) and every sequence's position, read as the superuser."""
    with sdb.connect(admin=True) as admin:
        state: dict[str, Any] = {}
        for (table,) in admin.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname "
                "IN ('public', 'auth', 'storage') ORDER BY 1").fetchall():
            rows = admin.execute(f"SELECT * FROM {table}").fetchall()
            state[table] = sorted(map(repr, rows))
        for (seq,) in admin.execute(
                "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences "
                "ORDER BY 1").fetchall():
            state[seq] = admin.execute(
                f"SELECT last_value, is_called FROM {seq}").fetchone()
    return state


def test_probing_changes_nothing(fresh_access: SupaDb) -> None:
    """Rows and sequences are as before; every write the probe made (seen by a trigger,
    which reports its transaction id) belongs to a transaction that ended aborted."""
    sdb = fresh_access
    with sdb.connect(admin=True) as admin:
        admin.execute("""
            CREATE FUNCTION public.report_xid() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE NOTICE 'xid %', pg_current_xact_id();
              RETURN NULL;
            END $$""")
        for table in ("todos", "notices", "projects", "tags", "secrets"):
            admin.execute(f"CREATE TRIGGER report AFTER INSERT OR UPDATE OR DELETE ON "
                          f"public.{table} FOR EACH ROW EXECUTE FUNCTION public.report_xid()")
    before = _state(sdb)
    assert {"public.todos_id_seq", "public.notices_id_seq"} <= set(before)
    xids: list[str] = []
    with sdb.connect() as conn:
        conn.add_notice_handler(lambda d: xids.append((d.message_primary or "").split()[1]))
        m = probe_access(conn, ["public"], PROBES)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert sum(c.command(cmd).allowed and bool(c.command(cmd).rows)
               for c in m.cells for cmd in ("INSERT", "UPDATE", "DELETE")) > 10
    assert _state(sdb) == before
    assert xids and len(set(xids)) == 1  # one transaction for the whole probe
    with sdb.connect(admin=True) as admin:
        status = admin.execute("SELECT pg_xact_status(%s::xid8)", (xids[0],)).fetchone()
    assert status == ("aborted",)


def test_probing_inside_an_open_transaction_keeps_its_work_and_drops_its_own(
        fresh_access: SupaDb) -> None:
    """In a dry-run's transaction the probe is a savepoint: the transaction's own changes stay,
    the probe's are undone, and the role and claims are the session's again."""
    sdb = fresh_access
    with sdb.connect(autocommit=False) as conn:
        conn.execute("INSERT INTO public.tags VALUES ('green')")
        m = probe_access(conn, ["public"], [ANON], tables=["public.tags"])
        assert m.result("public.tags", "anon", "DELETE") == CommandProbe("DELETE", "allowed", 3)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        row = conn.execute("SELECT current_user::text, current_setting('request.jwt.claims', "
                           "true), (SELECT count(*) FROM public.tags)").fetchone()
        assert row is not None and row[0] == OWNER and not row[1] and row[2] == 3
        conn.rollback()
    assert _state(sdb)["public.tags"] == sorted(map(repr, [("red",), ("blue",)]))


def test_a_row_lock_held_elsewhere_is_an_error_not_a_wait(fresh_access: SupaDb) -> None:
    sdb = fresh_access
    with sdb.connect(admin=True, autocommit=False) as other:
        other.execute("SELECT * FROM public.tags WHERE name = 'red' FOR UPDATE")
        with sdb.connect() as conn:
            m = probe_access(conn, ["public"], [SERVICE], tables=["public.tags"],
                             lock_timeout="100ms")
        other.rollback()
    update = m.result("public.tags", "service_role", "UPDATE")
    assert (update.outcome, update.sqlstate) == ("error", "55P03")
    assert m.result("public.tags", "service_role", "SELECT").rows == 2


# --------------------------------------------------------------------------- refusals


def test_one_block_per_role_gives_what_one_statement_at_a_time_gives(
        access: SupaDb, matrix: AccessMatrix, monkeypatch: pytest.MonkeyPatch) -> None:
    """The matrix comes from one DO block per role; when that block cannot run, every
    statement runs in its own savepoint instead: both ways give the same cells."""
    import dbsage.tools.rls as rls

    one_at_a_time: list[str] = []
    real = rls._attempt

    def counted(conn: psycopg.Connection[Any], command: Any, stmt: str | None) -> CommandProbe:
        if stmt is not None:
            one_at_a_time.append(stmt)
        return real(conn, command, stmt)

    monkeypatch.setattr(rls, "_attempt", counted)
    with access.connect() as conn:
        assert probe_access(conn, ["public"], PROBES) == matrix
    assert one_at_a_time == []  # all of it in the blocks
    monkeypatch.setattr(rls, "_PROBE_BLOCK", "DO $$ BEGIN RAISE EXCEPTION 'no block'; END $$")
    with access.connect() as conn:
        one_by_one = probe_access(conn, ["public"], PROBES)
    assert one_by_one == matrix
    assert len(one_at_a_time) >= len(TABLES) * (1 + 3 * len(PROBES))
    assert sum(c.command(cmd).outcome != "allowed" for c in matrix.cells
               for cmd in ("SELECT", "INSERT", "UPDATE", "DELETE")) > 5  # denials compared too


def test_a_role_that_cannot_switch_is_refused_with_a_hint(fresh_access: SupaDb) -> None:
    sdb = fresh_access
    create_login_role(sdb, "dbsage_test_outsider")
    before = _state(sdb)
    with connect_as(sdb, "dbsage_test_outsider") as conn:
        with pytest.raises(RlsError) as err:
            probe_access(conn, ["public"], [ANON])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert "dbsage_test_outsider cannot switch to the role anon" in err.value.message
    assert "GRANT anon TO dbsage_test_outsider" in (err.value.hint or "")
    assert _state(sdb) == before


@pytest.mark.parametrize(("role", "claims", "words"), [
    ("postgres", None, "Cannot impersonate 'postgres'"),
    ("authenticated", "[1]", "not a JSON object"),
    ("authenticated", "{", "not a JSON object"),
])
def test_bad_probes_are_refused(role: str, claims: str | None, words: str) -> None:
    with pytest.raises(RlsError) as err:
        RoleProbe(role, claims)
    assert words in err.value.message and err.value.hint


@pytest.mark.parametrize(("probes", "tables", "words"), [
    ([], None, "No role"),
    ([ANON, RoleProbe("anon")], None, "same name"),
    ([ANON], ["public.nope"], "public.nope"),
])
def test_bad_requests_are_refused(access: SupaDb, probes: list[RoleProbe],
                                  tables: list[str] | None, words: str) -> None:
    with access.connect() as conn:
        with pytest.raises(RlsError) as err:
            probe_access(conn, ["public"], probes, tables=tables)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert words in err.value.message and err.value.hint
