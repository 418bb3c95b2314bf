"""The report a person reads (issue 15): one screen for a small apply at 80 columns, every
check with --verbose (wrapped at word boundaries), one line with --quiet, each finding once,
truthful wording for data-only migrations and failed statements."""

from __future__ import annotations

import json
import math
from pathlib import Path

from conftest import Db
from helpers import migration, run_cli

COLS = {"COLUMNS": "80"}
CREATE = ("create table public.orders (id bigint primary key, total numeric not null);\n"
          "insert into public.orders values (1, 10), (2, 20);\n")


def _screen_rows(text: str, width: int = 80) -> int:
    """Rows the text takes on a terminal `width` columns wide."""
    return sum(max(1, math.ceil(len(line) / width)) for line in text.splitlines())


def test_a_two_statement_apply_fits_one_screen_and_quiet_is_one_line(db18: Db,
                                                                     project: Path) -> None:
    path = migration(project, "20250101000000_orders.sql", CREATE).relative_to(project)
    out = run_cli("apply", str(path), "--mode", "yolo", "--db", db18.url, cwd=project, env=COLS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _screen_rows(out.stdout) <= 24, out.stdout
    for part in ("✅ Migration Applied Successfully", f"Migration: {path}", "- Before:",
                 "Version:   20250101000000 (2 statement(s), 2 row(s))", "Timing:",
                 "Statements:", "✓ line 1", "✓ line 2", "Checks: ", "passed", "Next steps:"):
        assert part in out.stdout, part
    # the RLS warning is said once: as the check that found it, not again as a warning
    assert out.stdout.count("RLS is off on new table(s) public.orders") <= 1
    assert out.stdout.count("RLS is") == 1, out.stdout

    path2 = migration(project, "20250102000000_more.sql",
                      "insert into public.orders values (3, 30);\n").relative_to(project)
    quiet = run_cli("apply", str(path2), "--mode", "yolo", "--db", db18.url, "--quiet",
                    cwd=project, env=COLS)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    lines = quiet.stdout.splitlines()
    assert len(lines) == 1, quiet.stdout
    assert lines[0].startswith("✅ applied ") and str(path2) in lines[0]
    assert "version 20250102000000" in lines[0] and " TS 2" in lines[0]
    assert quiet.stderr == ""  # notices too are left out
    both = run_cli("apply", str(path2), "--db", db18.url, "-q", "-v", cwd=project)
    assert both.returncode == 2 and "exclude each other" in both.stdout + both.stderr


def test_verbose_lists_every_check_wrapped_at_word_boundaries(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_idx.sql",
                     "create table public.t (id int, note text);\n"
                     "create index t_note on public.t (note);\n")
    out = run_cli("apply", str(path), "--mode", "yolo", "--db", db18.url, "--verbose",
                  cwd=project, env=COLS)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Checks: "))
    block = []
    for ln in lines[start + 1:]:
        if not ln.startswith("  "):
            break
        block.append(ln)
    marks = [ln for ln in block if ln[2] in "✓!✗~"]
    assert len(marks) >= 14, block  # every check, each on its own (wrapped) entry
    for ln in block:  # wrapped to the width, never inside a word
        assert len(ln) <= 80 or " " not in ln.strip(), ln
    joined = " ".join(ln.strip() for ln in block)
    assert ("Migration file parses (PostgreSQL's own parser; query syntax valid) — before "
            "anything touches the database") in joined
    # squawk's finding once, under a title that does not say it found nothing
    assert out.stdout.count("prefer-bigint-over-int") == 1, out.stdout
    assert "squawk finds no error" not in out.stdout
    assert "squawk lint (an error blocks, a warning does not)" in joined


def test_data_only_migration_says_so_instead_of_empty_diff(db18: Db, project: Path) -> None:
    first = migration(project, "20250101000000_orders.sql", CREATE)
    assert run_cli("apply", str(first), "--mode", "yolo", "--db", db18.url,
                   cwd=project).returncode == 0
    data = migration(project, "20250102000000_data.sql",
                     "update public.orders set total = total + 1 where id = 1;\n")
    out = run_cli("apply", str(data), "--mode", "yolo", "--db", db18.url, cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No schema change (data only)" in out.stderr
    assert "empty diff" not in out.stdout + out.stderr
    # a DDL statement that changes nothing is still called out
    noop = migration(project, "20250103000000_noop.sql",
                     "create table if not exists public.orders (id bigint);\n")
    out2 = run_cli("apply", str(noop), "--mode", "yolo", "--db", db18.url, cwd=project)
    assert out2.returncode == 0, out2.stdout + out2.stderr
    assert "empty diff" in out2.stdout and "data only" not in out2.stdout + out2.stderr
    # an overridden check reads as overridden, not as a red failure
    drop = migration(project, "20250104000000_drop.sql",
                     "alter table public.orders drop column total;\n")
    out3 = run_cli("apply", str(drop), "--mode", "yolo", "--db", db18.url,
                   "--allow-destructive", cwd=project, env=COLS)
    assert out3.returncode == 0, out3.stdout + out3.stderr
    assert "1 overridden" in out3.stdout
    assert "  ~ No statement destroys data" in out3.stdout and "(overridden)" in out3.stdout
    assert "✗" not in out3.stdout


def test_failed_dry_run_shows_its_statements_once_with_the_real_duration(
        db: Db, project: Path) -> None:
    path = migration(project, "20250101000000_bad.sql",
                     "create table public.t (id int);\n"
                     "do $$ begin perform pg_sleep(0.2); raise exception 'boom'; end $$;\n")
    out = run_cli("dry-run", str(path), "--db", db.url, cwd=project, env=COLS)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.count("Statements:") == 1, out.stdout
    failed = next(ln for ln in out.stdout.splitlines() if "✗ line 2" in ln)
    assert "(0.0 ms)" not in failed
    doc = json.loads(run_cli("dry-run", str(path), "--db", db.url, "--json", cwd=project).stdout)
    assert doc["statements"][1]["status"] == "failed"
    assert doc["statements"][1]["duration_ms"] >= 150, doc["statements"]
