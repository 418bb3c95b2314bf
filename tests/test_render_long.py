"""A long file's report fits on a screen: the first statements, the failed one with its
neighbours, the last ones, and how many are left out."""

from __future__ import annotations

from dbsage.agent.render import MAX_STATEMENTS_SHOWN, _shown_statements


def test_a_short_file_shows_every_statement() -> None:
    st = [{"status": "ok"} for _ in range(MAX_STATEMENTS_SHOWN)]
    assert _shown_statements(st) == st


def test_a_long_file_shows_the_ends_and_the_failure_and_counts_the_rest() -> None:
    st = [{"status": "ok", "i": i} for i in range(10_000)]
    st[5000]["status"] = "failed"
    shown = _shown_statements(st)
    rows = [s for s in shown if not isinstance(s, int)]
    gaps = [s for s in shown if isinstance(s, int)]
    assert [s["i"] for s in rows] == [*range(12), 4999, 5000, 5001, *range(9996, 10_000)]
    assert sum(gaps) + len(rows) == 10_000 and len(shown) < 25
