"""The diff patch shows the schema change, not pg_dump's --clean DROP preamble (issue 15)."""

from __future__ import annotations

from pathlib import Path

from conftest import Db
from helpers import apply, migration


def test_patch_of_a_new_table_starts_with_its_create_not_a_drop(db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_orders.sql",
                     "create table public.orders (id bigint primary key, total numeric);\n"
                     "create index orders_total on public.orders (total);\n")
    report = apply(db, path, project)
    assert report.status == "applied", report.error
    patch = (project / report.files["diff"]).read_text()
    added = [x for x in patch.splitlines() if x.startswith("+") and not x.startswith("+++")]
    assert "+CREATE TABLE public.orders (" in added
    assert "+CREATE INDEX orders_total ON public.orders USING btree (total);" in added
    assert not [x for x in added if "DROP" in x], added
    # the snapshots themselves stay whole (--clean): a rollback restores from them
    after = (project / report.files["after"]).read_text()
    assert "DROP TABLE IF EXISTS public.orders;" in after

    # a change to an existing table: only that change, and its constraint drop is not shown
    path2 = migration(project, "20250102000000_note.sql",
                      "alter table public.orders add column note text;\n")
    report2 = apply(db, path2, project)
    patch2 = (project / report2.files["diff"]).read_text()
    changed = [x for x in patch2.splitlines() if x[:1] in "+-" and x[:3] not in ("+++", "---")]
    assert changed == ["-    total numeric", "+    total numeric,", "+    note text"], changed


DUMP = """--
-- PostgreSQL database dump
--

\\restrict key
SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

DROP INDEX IF EXISTS public.orders_total;
ALTER TABLE IF EXISTS ONLY public.orders DROP CONSTRAINT IF EXISTS orders_pkey;
DROP TABLE IF EXISTS public.orders;
SET default_tablespace = '';

--
-- Name: orders; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.orders (
    id bigint NOT NULL
);
"""


def test_the_drop_run_is_left_out_and_nothing_else() -> None:
    from dbsage.tools.diff import without_clean_section

    stripped = without_clean_section(DUMP)
    assert "DROP" not in stripped
    assert stripped.startswith("--\n-- PostgreSQL database dump\n")
    assert "SELECT pg_catalog.set_config('search_path', '', false);\n\nSET default_tablespace" \
        in stripped
    no_drops = DUMP.replace("DROP INDEX", "CREATE INDEX")  # the run must start the body
    assert without_clean_section(no_drops) == no_drops
    # an ALTER without DROP ends the run; a DROP without `;` is no single-line command
    assert "DROP TABLE" in without_clean_section(DUMP.replace("DROP INDEX IF EXISTS", "ALTER x"))
    assert "DROP TABLE" in without_clean_section(DUMP.replace("orders_total;", "orders_total"))


def test_a_diff_from_a_side_read_ahead_leaves_no_temporary_file(tmp_path: Path) -> None:
    from dbsage.tools.diff import diff_snapshots, read_side

    before, after = tmp_path / "b.sql", tmp_path / "a.sql"
    before.write_text(DUMP)
    after.write_text(DUMP.replace("    id bigint NOT NULL\n", "    id bigint NOT NULL,\n"
                                  "    note text\n"))
    side = read_side(before)
    before.unlink()  # read already: the diff does not read it again
    result = diff_snapshots(side, after, tmp_path / "x_diff.patch")
    patch = result.path.read_text()
    assert (result.added, result.removed) == (2, 1), patch
    assert "+    note text" in patch and "DROP" not in patch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sql", "x_diff.patch"]


def test_a_side_written_ahead_gives_the_same_patch_and_leaves_nothing(tmp_path: Path) -> None:
    """read_side(before, dest) writes the stripped before-side beside the patch while the
    after-snapshot is still being dumped; the diff reads the after-side from standard input.
    The patch is the one a side read without `dest` gives, and no temporary file stays: not
    after the diff, and not when the diff never runs (the after-snapshot failed)."""
    from dbsage.tools.diff import diff_snapshots, read_side

    before, after = tmp_path / "b.sql", tmp_path / "a.sql"
    before.write_text(DUMP)
    after.write_text(DUMP.replace("    id bigint NOT NULL\n", "    id bigint NOT NULL,\n"
                                  "    note text\n"))
    plain = diff_snapshots(read_side(before), after, tmp_path / "plain_diff.patch")
    ahead = read_side(before, tmp_path / "x_diff.patch")
    assert ahead.file is not None and ahead.file.read_text() == ahead.text
    assert ahead.file.parent == tmp_path and ahead.file.name.startswith(".x_diff.patch.a.")
    result = diff_snapshots(ahead, after, tmp_path / "x_diff.patch")
    assert result.path.read_text() == plain.path.read_text()
    assert (result.added, result.removed) == (2, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.sql", "b.sql", "plain_diff.patch", "x_diff.patch"]

    unused = read_side(before, tmp_path / "y_diff.patch")
    assert unused.file is not None and unused.file.exists()
    unused.discard()
    unused.discard()  # twice is harmless
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.sql", "b.sql", "plain_diff.patch", "x_diff.patch"]

