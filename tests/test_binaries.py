"""tools/binaries.py: one policy for every program dbsage runs (override, bundled, system)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import Db

from dbsage.tools.binaries import bundled_bin_dir, find_diff, find_pg_dump, find_psql, find_squawk
from dbsage.tools.errors import BinaryNotFoundError, LintUnavailableError
from dbsage.tools.snapshot import start_early_snapshot


def test_the_override_wins_then_the_bundled_copy(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.delenv("DBSAGE_PSQL", raising=False)
    assert find_psql() == find_psql(15) == bundled_bin_dir() / "psql"
    assert find_pg_dump(18).path == bundled_bin_dir() / "pg_dump"
    monkeypatch.setenv("DBSAGE_PSQL", str(tmp_path / "my-psql"))
    assert find_psql() == find_psql(17) == tmp_path / "my-psql"
    monkeypatch.setenv("DBSAGE_SQUAWK", str(tmp_path / "my-squawk"))
    assert find_squawk() == tmp_path / "my-squawk"


def test_nothing_found_is_one_error_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("DBSAGE_PSQL", "DBSAGE_SQUAWK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(BinaryNotFoundError, match="No psql found for a PostgreSQL 99 server"):
        find_psql(99)
    with pytest.raises(LintUnavailableError) as info:
        find_squawk()
    assert isinstance(info.value, BinaryNotFoundError) and info.value.exit_code == 2
    assert find_diff() is None


def test_the_early_snapshot_uses_dbsage_psql_too(db18: Db, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """It had a psql finder of its own that ignored DBSAGE_PSQL (restoring honoured it)."""
    calls = tmp_path / "calls"
    wrapper = tmp_path / "psql"
    wrapper.write_text(f"#!/bin/sh\necho called >> {calls}\nexec {bundled_bin_dir() / 'psql'} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("DBSAGE_PSQL", str(wrapper))
    early = start_early_snapshot(db18.url, tmp_path / "early.sql")
    assert early is not None
    early.discard()
    assert calls.read_text() == "called\n"
    monkeypatch.setenv("DBSAGE_PSQL", str(tmp_path / "missing"))
    assert start_early_snapshot(db18.url, tmp_path / "early2.sql") is None  # no psql: no early dump
