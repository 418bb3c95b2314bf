"""Token budget of Dara's LangChain agent: system prompt + tool schemas, and one apply.

Tokens are estimated as characters / 4 (no tokenizer download, no network). Prints:
  1. the system prompt (agent/prompts/dara.yaml) and each tool's JSON schema as a model
     receives it (`convert_to_openai_tool`), against the target of <= 2,000 tokens;
  2. a full "apply the pending migration" conversation — status, dry_run, apply_migration,
     final reply — where every model call re-sends the prompt, the tools and the history,
     using dbsage's real model-facing summaries of typical results.

    /work/venv/bin/python bench/agent_tokens.py
"""

from __future__ import annotations

import json
from pathlib import Path

from langchain_core.utils.function_calling import convert_to_openai_tool

from dbsage.agent.dispatch import ChatSession, DispatchResult, _status_text
from dbsage.agent.llm import build_tools, load_prompt, summarise
from dbsage.agent.report import RunReport

TARGET = 2000
PATH = "supabase/migrations/20250101000000_create_todos.sql"


def tokens(text: str) -> int:
    return (len(text) + 3) // 4


def tool_schemas() -> dict[str, str]:
    tools = build_tools(ChatSession(project_dir=Path.cwd()))
    return {t.name: json.dumps(convert_to_openai_tool(t), separators=(",", ":")) for t in tools}


def sample_results() -> dict[str, str]:
    """What the tools return to the model in a typical run (a 5-statement migration)."""
    statements = [{"index": i, "line": i, "sql": "create table ...", "transactional": True,
                   "status": "ok", "rows_affected": 0, "duration_ms": 1.0} for i in range(1, 6)]
    status = _status_text({"target": "postgresql://postgres:***@db.example.supabase.co:5432/postgres",
                           "applied": [f"2024120{i}000000_m{i}.sql" for i in range(1, 7)],
                           "pending": [Path(PATH).name], "drifted": [], "missing": [],
                           "unverified": [], "ignored": [], "duplicates": []})
    dry = RunReport(task="dry-run", status="passed", path=PATH, statements=statements,
                    changes=[{"kind": k, "action": "added", "name": n, "detail": "", "ddl": ""}
                             for k, n in (("table", "public.todos"),
                                          ("constraint", "public.todos.todos_pkey"),
                                          ("index", "public.todos_owner_idx"),
                                          ("policy", "public.todos.owner_only"))])
    applied = RunReport(task="apply-migration", status="applied", path=PATH, ts="20261124121344",
                        statements=statements, follow_up="*smoke-test")
    return {"status": status, "dry_run": summarise(DispatchResult("dry-run", report=dry)),
            "apply_migration": summarise(DispatchResult("apply-migration", report=applied))}


def conversation(fixed: int, results: dict[str, str]) -> list[tuple[str, int, int]]:
    """(model call, input tokens, output tokens) for each call of one apply conversation."""
    history = tokens("apply the pending migration") + 4
    calls = []
    for name, args in (("status", {}), ("dry_run", {"path": PATH}),
                       ("apply_migration", {"path": PATH})):
        out = tokens(json.dumps({"name": name, "args": args})) + 10
        calls.append((f"→ {name}", fixed + history, out))
        history += out + tokens(results[name]) + 6
    reply = ("Applied 20250101000000_create_todos.sql (5 statements, ts 20261124121344); the "
             "dry-run passed first and the smoke test passed. Snapshots and the diff are in "
             "supabase/snapshots/. Undo with *rollback 20261124121344; next: *rls-audit.")
    calls.append(("→ final reply", fixed + history, tokens(reply)))
    return calls


def main() -> None:
    system = load_prompt()["system"]
    schemas = tool_schemas()
    fixed = tokens(system) + sum(tokens(s) for s in schemas.values())
    print("Dara's agent: prompt + tool schemas (tokens ≈ characters / 4)")
    print(f"  system prompt (agent/prompts/dara.yaml)  {len(system):>6} chars  {tokens(system):>5}")
    for name, schema in schemas.items():
        print(f"  tool {name:<36}{len(schema):>6} chars  {tokens(schema):>5}")
    verdict = "met" if fixed <= TARGET else "NOT met"
    print(f"  total sent with every model call        {fixed:>19}  (target ≤ {TARGET:,}: {verdict})")
    results = sample_results()
    print("\nOne 'apply the pending migration' conversation (status, dry_run, apply, reply):")
    total_in = total_out = 0
    for label, tin, tout in conversation(fixed, results):
        total_in, total_out = total_in + tin, total_out + tout
        print(f"  {label:<20} input {tin:>6}  output {tout:>4}")
    print(f"  total                input {total_in:>6}  output {total_out:>4}  "
          f"= {total_in + total_out:,} tokens (original budget 3,000-10,000 per run)")
    print("\nTool results as the model sees them:")
    for name, text in results.items():
        print(f"  {name}: {text[:200]}{'...' if len(text) > 200 else ''}".replace("\n", " | "))


if __name__ == "__main__":
    main()
