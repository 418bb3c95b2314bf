"""A pre-flight plan (agent/preflight.py's dict) as a person reads it: the compact table on
screen and the Markdown document of supabase/plans/. Pure functions of the plan; no I/O."""

from __future__ import annotations

from typing import Any

STATEMENT_MIN = 24  # the statement column's least width, however narrow the screen
# What each destructive kind does, as a sentence ("line 3: drops column ...").
_DOES = {"drop_table": "drops table {t}", "drop_column": "drops column(s) {c} of {t}",
         "alter_type": "changes the type of {c} of {t} (rewrites the values)",
         "truncate": "empties {t} (TRUNCATE)",
         "delete_without_where": "deletes every row of {t} (DELETE without WHERE)",
         "update_without_where": "updates every row of {t} (UPDATE without WHERE)",
         "drop_schema": "drops schema {t} and everything in it"}


def size_text(size: dict[str, Any] | None, created: bool = False) -> str:
    """`176 kB, ~1.2k rows`; `new` for a table the migration creates; `missing`."""
    if created:
        return "new"
    if size is None or not size.get("exists"):
        return "missing"
    text = bytes_text(int(size.get("bytes") or 0))
    rows = size.get("estimated_rows")
    if rows is not None and rows >= 0:
        text += f", ~{count_text(int(rows))} rows"
    return text


def bytes_text(n: int) -> str:
    """As pg_size_pretty writes it: bytes below 10 kB, then kB, MB, GB, TB."""
    if n < 10_240:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("kB", "MB", "GB"):
        if value < 10_240:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.0f} TB"


def count_text(n: int) -> str:
    """1234 → 1.2k, 5600000 → 5.6M."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")


def _cut(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _created(plan: dict[str, Any]) -> set[str]:
    return set(plan.get("created") or ())


def _stake(plan: dict[str, Any], line: int) -> str:
    """The rows a statement's destructive operations put at stake."""
    ops = [d for d in plan.get("destructive", []) if d["line"] == line]
    if not ops:
        return ""
    if any(d["rows_at_stake"] is None for d in ops):
        return "?"
    return f"{sum(int(d['rows_at_stake']) for d in ops):,} rows"


def _lint(plan: dict[str, Any], line: int) -> str:
    return ", ".join(dict.fromkeys(f["rule"] for f in plan.get("lint", []) if f["line"] == line))


def rows(plan: dict[str, Any]) -> list[dict[str, str]]:
    """One row per statement: line, statement, lock, table, size, rewrite, at stake, lint."""
    created, sizes = _created(plan), plan.get("tables", {})
    out = []
    for s in plan["statements"]:
        table = s["tables"][0] if s["tables"] else ""
        size = size_text(sizes.get(table), table in created) if table else ""
        out.append({"line": str(s["line"]), "statement": s["sql"],
                    "lock": s["lock_level"] or "-", "table": table, "size": size,
                    "rewrite": "yes" if s["rewrites_table"] else "",
                    "at stake": _stake(plan, s["line"]), "lint": _lint(plan, s["line"])})
    return out


def how_it_runs(plan: dict[str, Any]) -> str:
    if plan["transactional"]:
        return "in one transaction (any error rolls all of it back)"
    return "one statement at a time, outside a transaction (each commits when it finishes)"


def strongest_lock_text(plan: dict[str, Any]) -> str:
    """The strongest lock on a table that exists before the migration, said so, so that the
    ACCESS EXCLUSIVE of a CREATE TABLE in the table below does not contradict it."""
    lock = plan.get("strongest_lock")
    on_new = [s["lock_level"] for s in plan["statements"] if s["lock_level"]
              and s["tables"] and all(t in _created(plan) for t in s["tables"])]
    text = f"strongest lock on an existing table: {lock or 'none'}"
    if on_new:
        text += " (the locks on tables this migration creates block nobody)"
    return text


def dry_run_text(plan: dict[str, Any]) -> str:
    dry = plan.get("dry_run") or {}
    if not dry:
        return "dry-run: not run"
    took = f" in {dry['duration_s'] * 1000:,.0f} ms" if "duration_s" in dry else ""
    return f"dry-run {'passed' if dry.get('passed') else 'FAILED'}{took}"


def plan_table(plan: dict[str, Any], width: int = 100) -> str:
    """The plan on screen: a header line, one row per statement (the statement column takes
    what the others leave of `width`), then what needs a look."""
    lines = [f"Plan: {plan['path']} on {plan['target']}",
             f"Runs {how_it_runs(plan)}; {strongest_lock_text(plan)}; {dry_run_text(plan)}.",
             *table_lines(plan, width), *note_lines(plan)]
    advisors = plan.get("advisors")
    if advisors:
        lines.append(f"  Advisors: this migration {advisors['summary']}.")
    return "\n".join(lines)


def batch_plan_table(plan: dict[str, Any], width: int = 100) -> str:
    """`up`'s plan on screen: each pending file with its statements' table and notes."""
    how = ("in one transaction (--atomic)" if plan.get("atomic")
           else "each file in its own transaction")
    lines = [f"Plan: {len(plan['files'])} pending migration(s) on {plan['target']}",
             f"Runs {how}; {dry_run_text(plan)} (the whole batch)."]
    created: list[str] = []
    for i, f in enumerate(plan["files"], 1):
        created += f.get("created", [])
        one = {**f, "tables": plan.get("tables", {}), "created": created}
        lock = f["strongest_lock"] or "none"
        lines.append(f"{i}. {f['file']}: strongest lock on an existing table: {lock}")
        lines += [*table_lines(one, width), *note_lines(one)]
    return "\n".join(lines)


def table_lines(plan: dict[str, Any], width: int) -> list[str]:
    """The statements' table: line, statement, lock, size, rewrite, at stake, lint."""
    table = rows(plan)
    columns = ["line", "statement", "lock", "size", "rewrite", "at stake", "lint"]
    widths = [max(len(c), *(len(r[c]) for r in table)) for c in columns]
    room = width - 2 - 2 * (len(columns) - 1) - sum(widths) + widths[1]
    cut = max(STATEMENT_MIN, min(widths[1], room))
    cells = [[r[c] if c != "statement" else _cut(r[c], cut) for c in columns] for r in table]
    widths[1] = max(len(columns[1]), *(len(row[1]) for row in cells))
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  " + "  ".join(v.rjust(w) if i == 0 else v.ljust(w)
                                      for i, (v, w) in enumerate(zip(row, widths, strict=True)))
                     .rstrip())
    return lines


def note_lines(plan: dict[str, Any]) -> list[str]:
    """What needs a look, a line each: destructive operations, squawk, missing objects."""
    lines = [f"  ! line {d['line']}: {destructive_text(d)}" for d in plan.get("destructive", [])]
    lines += [f"  ! line {f['line']}: squawk {f['level']} {f['rule']}: {f['message']}"
              for f in plan.get("lint", [])]
    lines += [f"  ! line {x['line']}: {x['kind']} {x['name']} is missing: {x['reason']}"
              for x in plan.get("missing_objects", [])]
    return lines


def destructive_text(d: dict[str, Any]) -> str:
    """`drops column(s) done of public.todos: 1,234 row(s) at stake`."""
    what = _DOES.get(d["kind"], d["kind"].replace("_", " ") + " {t}").format(
        t=d["table"], c=", ".join(d["columns"]) or "-")
    rows_ = d.get("rows_at_stake")
    return what + (f": {rows_:,} row(s) at stake" if rows_ is not None
                   else ": rows at stake not counted")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def plan_markdown(plan: dict[str, Any]) -> str:
    """A plan a reviewer can read in a pull request."""
    lines = [f"# Pre-flight plan: {plan['path']}", "",
             f"- Target: {plan['target']}",
             f"- Runs {how_it_runs(plan)}; {strongest_lock_text(plan)}",
             f"- {dry_run_text(plan).capitalize()}",
             f"- Checksum: `{plan['checksum']}`",
             f"- Schema fingerprint: `{plan['fingerprint']}`", "", "## Statements", "",
             "| line | statement | lock | table | size | rewrite | rows at stake | squawk |",
             "|---:|---|---|---|---|---|---:|---|"]
    for r in rows(plan):
        lines.append(f"| {r['line']} | `{_md(_cut(r['statement'], 80))}` | {r['lock']} | "
                     f"{_md(r['table']) or '-'} | {r['size'] or '-'} | {r['rewrite']} | "
                     f"{r['at stake']} | {_md(r['lint'])} |")
    created = _created(plan)
    tables = plan.get("tables", {})
    if tables:
        lines += ["", "## Tables", "", "| table | size | estimated rows |", "|---|---:|---:|"]
        for name, t in tables.items():
            new = name in created
            est = t.get("estimated_rows")
            lines.append(f"| {_md(name)} | {size_text(t, new).split(', ~')[0]} | "
                         + ("-" if new or est is None or est < 0 else f"{est:,}") + " |")
    if plan.get("destructive"):
        lines += ["", "## Destructive operations", ""]
        lines += [f"- line {d['line']}: {destructive_text(d)}" for d in plan["destructive"]]
    if plan.get("lint"):
        lines += ["", "## squawk", ""]
        lines += [f"- line {f['line']}: {f['level']} `{f['rule']}`: {f['message']}"
                  for f in plan["lint"]]
    if plan.get("missing_objects"):
        lines += ["", "## Missing objects", ""]
        lines += [f"- line {x['line']}: {x['kind']} `{x['name']}`: {x['reason']}"
                  for x in plan["missing_objects"]]
    advisors = plan.get("advisors")
    if advisors:
        lines += ["", "## Advisor lints", "", f"This migration {advisors['summary']}."]
        for f in advisors["introduced"]:
            lines += ["", f"- introduces **{f['level']} {f['name']}** on `{f['object']}`"
                      + (f" ({f['item']})" if f["item"] else "") + f": {f['detail']}",
                      f"  - Why: {f['why']}", "  - Fix:", "", "```sql", f["fix"], "```"]
        lines += [f"- fixes {f['level']} {f['name']} on `{f['object']}`"
                  for f in advisors["fixed"]]
    return "\n".join(lines) + "\n"
