"""The report's per-statement entries are spelled out (asdict was too slow for 10,000
statements): they must still carry every field of StatementOutcome, with the same values."""

from __future__ import annotations

from dataclasses import asdict, fields

from dbsage.agent.state import StatementOutcome, _statement_dict


def test_a_statement_entry_has_every_field_with_its_value() -> None:
    s = StatementOutcome(3, 7, "select 1", transactional=False, status="ok", rows_affected=2,
                         duration_ms=1.5, locks=["ACCESS SHARE on public.t"])
    assert _statement_dict(s) == asdict(s)
    assert set(_statement_dict(s)) == {f.name for f in fields(StatementOutcome)}


def test_an_entry_without_locks_leaves_the_key_out() -> None:
    d = _statement_dict(StatementOutcome(1, 1, "select 1"))
    assert "locks" not in d and d["status"] == "not_run"
