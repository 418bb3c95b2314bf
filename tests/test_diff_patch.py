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
