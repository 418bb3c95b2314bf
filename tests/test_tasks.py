"""Task definitions: the shipped files load; malformed ones fail with file, line and allowed values.

Pure tests: no database. The expected line of each malformed case is the line marked `# <-`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dbsage.agent.definitions import TaskSpec
from dbsage.agent.runner import known_checks
from dbsage.agent.steps import STEPS as RUNNER_STEPS
from dbsage.agent.tasks import (
    TaskDefinitionError,
    load_all_tasks,
    load_task,
    parse_task,
    shipped_task_names,
)
from dbsage.tools.errors import DbsageError

# The engine's real registries: a shipped file naming an unregistered check or step fails.
CHECKS = known_checks()
STEPS = frozenset(RUNNER_STEPS)
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "task_definitions"
MARK = "# <-"


def load(name: str) -> TaskSpec:
    return load_task(name, known_checks=CHECKS, known_steps=STEPS)


# --------------------------------------------------------------------------- shipped files

def test_every_shipped_definition_loads() -> None:
    tasks = load_all_tasks(known_checks=CHECKS, known_steps=STEPS)
    assert sorted(tasks) == ["analyze-hotpaths", "apply-migration", "dry-run", "rls-audit",
                             "rollback", "seed", "smoke-test", "up", "up-dry-run"]
    assert shipped_task_names() == sorted(tasks)
    for name, definition in tasks.items():
        assert definition.task == name
        assert definition.about.responsible.startswith("Dara")
        assert definition.steps, name
        assert definition.success_output, name
        assert definition.checklist_items, name


def test_shipped_files_are_the_repository_files() -> None:
    on_disk = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
    assert on_disk == shipped_task_names()


@pytest.mark.parametrize(
    ("name", "steps"),
    [
        ("apply-migration", ["connect_target", "acquire_lock", "check_history",
                             "take_snapshot_before", "save_destroyed_data", "apply_migration",
                             "take_snapshot_after", "diff_snapshots", "prepare_rollback",
                             "release_lock"]),
        ("dry-run", ["connect_target", "acquire_lock", "dry_run_migration", "release_lock"]),
        ("rollback", ["connect_target", "acquire_lock", "take_snapshot_before",
                      "rollback_migration", "take_snapshot_after", "diff_snapshots",
                      "release_lock"]),
        ("smoke-test", ["connect_target", "run_smoke_checks"]),
    ],
)
def test_steps_in_order_and_only_release_lock_always_runs(name: str, steps: list[str]) -> None:
    definition = load(name)
    assert [s.id for s in definition.steps] == steps
    assert [s.id for s in definition.steps if s.always] == (
        ["release_lock"] if "release_lock" in steps else [])


def test_apply_migration_contract() -> None:
    apply = load("apply-migration")
    assert apply.default_mode == "interactive"
    assert apply.about.elicit is True
    assert [i.name for i in apply.inputs if i.required] == ["path"]

    assert [i.check for i in apply.pre_conditions] == [
        "is_a_migration", "file_parses", "connection_established", "not_applied_yet", "checksum_unchanged",
        "migration_order", "no_destructive_statements", "lint_clean", "lock_available"]
    assert [(i.check, i.override) for i in apply.pre_conditions if i.override] == [
        ("migration_order", "allow_out_of_order"), ("no_destructive_statements",
                                                    "allow_destructive"), ("lint_clean", "force")]
    assert [i.check for i in apply.post_conditions] == [
        "transaction_committed", "history_row_present"]
    assert [i.check for i in apply.acceptance_criteria] == [
        "no_invalid_indexes", "no_not_valid_constraints", "no_orphaned_fk_rows",
        "rls_enabled_on_new_tables"]
    rls = apply.acceptance_criteria[-1]
    assert (rls.blocker, rls.severity) == (False, "warn")
    assert all(i.blocker for i in apply.checklist_items if i is not rls)

    connection = apply.retry_policy("connection")
    assert (connection.attempts, connection.on) == (3, ["connection_failed"])
    assert connection.multiplier > 1
    lock = apply.retry_policy("lock_timeout")
    assert (lock.attempts, lock.initial_wait_seconds, lock.multiplier, lock.max_wait_seconds,
            lock.on) == (10, 0.1, 2.0, 3.0, ["lock_timeout"])
    assert {s.id: s.retry for s in apply.steps if s.retry} == {
        "connect_target": "connection", "apply_migration": "lock_timeout"}
    assert apply.error_handling.strategy == "retry"
    titles = [e.title for e in apply.error_handling.errors]
    assert titles[:3] == ["Connection Failed", "Query Syntax Error", "Transaction Rollback"]
    assert not any("neo4j" in e.cause.lower() or "cypher" in e.cause.lower()
                   for e in apply.error_handling.errors)

    interactive = [c for c in apply.checkpoints if "interactive" in c.modes]
    assert 5 <= len(interactive) <= 10
    assert [c.id for c in apply.checkpoints] == [
        "confirm_migration_file", "confirm_database", "dry_run_done",
        "advisor_errors", "confirm_apply", "post_migration_menu"]
    assert not [c for c in apply.checkpoints if "yolo" in c.modes]
    dry = next(c for c in apply.checkpoints if c.id == "dry_run_done")
    assert dry.stop_message is not None and "*dry-run {path}" in dry.stop_message
    assert "record" in dry.explanation
    menu = apply.checkpoints[-1]
    assert [o.command for o in menu.options] == [
        "*smoke-test", "*rls-audit", "*analyze-hotpaths", None]
    assert [o.run for o in menu.options] == ["smoke_test", "rls_audit", "analyze_hotpaths", None]

    assert [n.command for n in apply.next_steps] == ["*smoke-test", "*rls-audit", "*rollback {ts}"]
    rendered = apply.success_output.format(
        ts="20250101000000", path="m.sql", snapshot_before="b", snapshot_after="a",
        snapshot_diff="d")
    assert rendered.startswith("✅ Migration Applied Successfully")
    assert "Timestamp: 20250101000000" in rendered


def test_every_registered_check_is_used_by_some_shipped_task() -> None:
    tasks = load_all_tasks(known_checks=CHECKS, known_steps=STEPS)
    used = {i.check for t in tasks.values() for i in t.checklist_items}
    assert used == CHECKS


def test_shipped_file_with_unregistered_check_names_file_and_line() -> None:
    text = (SHIPPED_DIR / "apply-migration.yaml").read_text(encoding="utf-8")
    line = text.splitlines().index("    check: lock_available") + 1
    with pytest.raises(TaskDefinitionError) as info:
        load_task("apply-migration", known_checks=CHECKS - {"lock_available"},
                  known_steps=STEPS)
    assert f"apply-migration.yaml:{line}:" in str(info.value)
    assert "unknown check 'lock_available'" in str(info.value)


def test_unknown_task_name_lists_the_shipped_tasks() -> None:
    with pytest.raises(TaskDefinitionError, match="unknown task 'apply'") as info:
        load("apply")
    assert all(name in str(info.value) for name in (
        "analyze-hotpaths", "apply-migration", "dry-run", "rls-audit", "rollback", "smoke-test"))


def test_load_by_path_equals_load_by_name() -> None:
    by_path = load_task(SHIPPED_DIR / "dry-run.yaml", known_checks=CHECKS, known_steps=STEPS)
    assert by_path == load("dry-run")


def test_missing_file_is_a_task_definition_error(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError, match="cannot read") as info:
        load_task(tmp_path / "nope.yaml", known_checks=CHECKS, known_steps=STEPS)
    assert "nope.yaml" in str(info.value)


# --------------------------------------------------------------------------- malformed files

BASE = """\
task: sample
title: Sample task
purpose: Exercise the loader
responsible: Dara (Sage)
default_mode: interactive
inputs:
  - name: path
    type: path
    source: User Input
    required: true
    validation: a .sql file
outputs:
  - name: ts
    type: string
    destination: Return value
    persisted: false
pre_conditions:
  - id: connection_established
    text: Database connection established
    check: connection_established
    blocker: true
    error_message: "Pre-condition failed: no connection"
steps:
  - id: connect_target
    retry: connection
  - id: release_lock
    always: true
checkpoints:
  - id: confirm_file
    before_step: connect_target
    question: Apply {path}?
    explanation: The file dbsage will run.
error_handling:
  strategy: retry
  retry:
    - id: connection
      attempts: 3
      initial_wait_seconds: 0.5
      multiplier: 2
      max_wait_seconds: 4
      on: [connection_failed]
success_output: "Done at {ts}: {path}"
next_steps:
  - command: "*rollback {ts}"
    description: Undo if needed
"""


def edit(old: str, new: str) -> str:
    """BASE with `old` (which must occur exactly once) replaced by `new`."""
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def write(tmp_path: Path, text: str, name: str = "sample") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def marked_line(text: str) -> int:
    """The 1-based line carrying the `# <-` marker (exactly one)."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if MARK in line]
    assert len(hits) == 1, hits
    return hits[0]


BAD_CASES = [
    pytest.param(
        BASE + "colour: blue  # <-\n",
        ["unknown key 'colour'", "allowed keys:", "title", "pre_conditions", "success_output"],
        id="unknown-top-level-key"),
    pytest.param(
        edit("    blocker: true\n", "    blocker: true\n    severty: warn  # <-\n"),
        ["pre_conditions[0]", "unknown key 'severty'",
         "allowed keys: id, text, check, blocker, error_message, severity"],
        id="unknown-item-key"),
    pytest.param(
        edit("    check: connection_established\n",
             "    check: conection_established  # <-\n"),
        ["pre_conditions[0].check", "unknown check 'conection_established'",
         "did you mean 'connection_established'", "registered checks:", "file_parses",
         "smoke_checks_pass"],
        id="unknown-check-id"),
    pytest.param(
        edit("  - id: release_lock\n", "  - id: release_locks  # <-\n"),
        ["steps[1].id", "unknown step 'release_locks'", "registered steps:", "acquire_lock",
         "run_smoke_checks"],
        id="unknown-step"),
    pytest.param(
        edit("  - id: connection_established\n", "  - id: connection_established  # <-\n")
        .replace("    check: connection_established\n", ""),
        ["pre_conditions[0]", "missing required key 'check'"],
        id="missing-check"),
    pytest.param(
        edit("    blocker: true\n", "    blocker: maybe  # <-\n"),
        ["pre_conditions[0].blocker", "expected a boolean (true or false)", "'maybe'"],
        id="blocker-wrong-type"),
    pytest.param(
        edit("    blocker: true\n", '    blocker: "yes"  # <-\n'),
        ["pre_conditions[0].blocker", "expected a boolean", "'yes'"],
        id="blocker-quoted-string-is-not-coerced"),
    pytest.param(
        edit("default_mode: interactive\n", "default_mode: fast  # <-\n"),
        ["default_mode", "'yolo', 'interactive' or 'preflight'", "'fast'"],
        id="bad-default-mode"),
    pytest.param(
        edit("purpose: Exercise the loader\n", "purpose: Exercise: the loader  # <-\n"),
        ["YAML syntax error", "mapping values are not allowed"],
        id="yaml-syntax-error"),
    pytest.param(
        edit("\nsteps:\n", "\n" + "  - id: connection_established  # <-\n"
             "    text: Again\n    check: file_parses\n    error_message: again\nsteps:\n"),
        ["pre_conditions[1].id", "duplicate id 'connection_established'",
         "already used by pre_conditions[0]"],
        id="duplicate-item-id"),
    pytest.param(
        edit("\nsteps:\n", "\n" + "post_conditions:\n  - id: connection_established  # <-\n"
             "    text: Again\n    check: transaction_committed\n    error_message: again\n"
             "steps:\n"),
        ["post_conditions[0].id", "duplicate id 'connection_established'"],
        id="duplicate-id-across-checklists"),
    pytest.param(
        edit("    before_step: connect_target\n", "    before_step: apply_migration  # <-\n"),
        ["checkpoints[0].before_step", "no step 'apply_migration' in this task",
         "steps: connect_target, release_lock"],
        id="checkpoint-at-missing-step"),
    pytest.param(
        edit("    before_step: connect_target\n", "    before_step: connect_target\n"
             "    after_step: release_lock  # <-\n"),
        ["checkpoints[0].after_step", "exactly one of before_step or after_step"],
        id="checkpoint-two-positions"),
    pytest.param(
        edit("    before_step: connect_target\n", "").replace("  - id: confirm_file\n",
                                                          "  - id: confirm_file  # <-\n"),
        ["checkpoints[0].id", "exactly one of before_step or after_step"],
        id="checkpoint-no-position"),
    pytest.param(
        edit("    retry: connection\n", "    retry: conection  # <-\n"),
        ["steps[0].retry", "unknown retry policy 'conection'", "defines: connection"],
        id="step-retry-unknown-policy"),
    pytest.param(
        edit("      on: [connection_failed]\n", "      on: [connection_failed, power_cut]  # <-\n"),
        ["error_handling.retry[0].on[1]", "'connection_failed'", "'lock_timeout'", "'power_cut'"],
        id="unknown-error-kind"),
    pytest.param(
        edit("      attempts: 3\n", "      attempts: three  # <-\n"),
        ["error_handling.retry[0].attempts", "expected an integer", "'three'"],
        id="attempts-wrong-type"),
    pytest.param(
        edit('success_output: "Done at {ts}: {path}"\n',
             'success_output: "Done at {TS}: {path}"  # <-\n'),
        ["success_output", "unknown placeholder '{TS}'", "inputs and outputs: path, ts"],
        id="unknown-placeholder"),
    pytest.param(
        edit("    blocker: true\n", "    blocker: true\n    severity: warn  # <-\n"),
        ["pre_conditions[0].severity", "blocker cannot have severity 'warn'"],
        id="blocker-with-warn-severity"),
    pytest.param(
        edit("    blocker: true\n", "    blocker: false\n    severity: loud  # <-\n"),
        ["pre_conditions[0].severity", "'warn' or 'fail'", "'loud'"],
        id="bad-severity"),
    pytest.param(
        edit("title: Sample task\n", "title: Sample task\ntitle: Again  # <-\n"),
        ["duplicate key 'title'", "first at line 2"],
        id="yaml-duplicate-key"),
    pytest.param(
        edit("    source: User Input\n", "    source: User Input\n    campo: path  # <-\n"),
        ["inputs[0]", "'campo' and 'name' are the same key", "keep one"],
        id="alias-and-english-duplicate"),
    pytest.param(
        edit("task: sample\n", "task: other-task  # <-\n"),
        ["task 'other-task' does not match the file name", "expected 'sample'"],
        id="task-name-differs-from-file"),
    pytest.param(
        edit("    type: path\n", "    type: filename  # <-\n"),
        ["inputs[0].type", "'string'", "'path'", "'boolean'", "'filename'"],
        id="bad-input-type"),
    pytest.param(
        edit("  - id: connect_target\n", "  - id: connect_target\n    tipo: step  # <-\n"),
        ["steps[0]", "unknown key 'tipo'", "allowed keys: id, always, retry, description"],
        id="portuguese-key-where-no-alias-applies"),
    pytest.param(
        edit("title: Sample task\n", "").replace("task: sample\n", "task: sample  # <-\n"),
        ["missing required key 'title'"],
        id="missing-title"),
    pytest.param(
        "- task: sample  # <-\n- title: x\n",
        ["expected a mapping of keys at the top level"],
        id="top-level-list"),
    pytest.param(
        edit("  - command: \"*rollback {ts}\"\n", "  - command: \"rollback {ts}\"  # <-\n"),
        ["next_steps[0].command", "should match pattern", "'rollback {ts}'"],
        id="next-step-without-star"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CASES)
def test_malformed_definition_names_file_line_and_allowed_values(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    line = marked_line(text)
    with pytest.raises(TaskDefinitionError) as info:
        load_task(path, known_checks=CHECKS, known_steps=STEPS)
    message = str(info.value)
    assert message.splitlines()[0].startswith(f"{path}:{line}: "), message
    assert info.value.line == line
    assert info.value.path == str(path)
    for fragment in expected:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TaskDefinitionError) as info:
        load_task(path, known_checks=CHECKS, known_steps=STEPS)
    assert str(info.value).startswith(f"{path}:1: file is empty")
    assert "task, title, purpose, responsible, steps" in str(info.value)


def test_error_is_a_dbsage_error_with_exit_code_2_and_every_problem(tmp_path: Path) -> None:
    text = edit("default_mode: interactive\n", "default_mode: fast\n").replace(
        "    blocker: true\n", "    blocker: maybe\n")
    path = write(tmp_path, text)
    with pytest.raises(DbsageError) as info:
        load_task(path, known_checks=CHECKS, known_steps=STEPS)
    error = info.value
    assert isinstance(error, TaskDefinitionError)
    assert error.exit_code == 2
    assert [p.line for p in error.problems] == [5, 21]
    assert len(str(error).splitlines()) == 2
    assert error.to_dict()["problems"][1]["where"] == "pre_conditions[0].blocker"


def test_no_check_passes_without_a_registry_entry(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    assert load_task(path, known_checks=CHECKS, known_steps=STEPS).task == "sample"
    with pytest.raises(TaskDefinitionError, match=r"registered checks: \(none\)"):
        load_task(path, known_checks=(), known_steps=STEPS)
    with pytest.raises(TaskDefinitionError, match=r"registered steps: \(none\)"):
        load_task(path, known_checks=CHECKS, known_steps=())


def test_load_all_tasks_gathers_problems_of_every_file(tmp_path: Path) -> None:
    write(tmp_path, edit("default_mode: interactive\n", "default_mode: fast\n"))
    write(tmp_path, BASE.replace("task: sample", "task: good"), name="good")
    write(tmp_path, BASE.replace("task: sample", "task: other"), name="zzz")
    with pytest.raises(TaskDefinitionError) as info:
        load_all_tasks(tmp_path, known_checks=CHECKS, known_steps=STEPS)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'sample.yaml'}:5: default_mode")
    assert lines[1].startswith(f"{tmp_path / 'zzz.yaml'}:1: task")
    (tmp_path / "sample.yaml").unlink()
    (tmp_path / "zzz.yaml").unlink()
    assert list(load_all_tasks(tmp_path, known_checks=CHECKS, known_steps=STEPS)) == ["good"]


# --------------------------------------------------------------------------- AIOS aliases

AIOS = """\
task: sample
title: Sample task
purpose: Exercise the aliases
{responsible}: Dara (Sage)
responsavel_type: Agente
{entrada}:
  - campo: path
    tipo: path
    origem: User Input
    {obrigatorio}: true
    {validacao}: Valid SQL file
  - campo: params
    tipo: object
    origem: User Input
    {obrigatorio}: false
{saida}:
  - campo: ts
    tipo: string
    destino: Memory
    persistido: false
pre-conditions:
  - id: connection_established
    text: Database connection established
    check: connection_established
    error_message: "Pre-condition failed"
steps:
  - id: connect_target
"""


@pytest.mark.parametrize(
    "spelling",
    [
        {"responsible": "responsável", "entrada": "Entrada", "saida": "Saída",
         "obrigatorio": "obrigatório", "validacao": "validação"},
        {"responsible": "responsavel", "entrada": "entrada", "saida": "Saida",
         "obrigatorio": "obrigatorio", "validacao": "validacao"},
    ],
    ids=["accented", "unaccented"],
)
def test_portuguese_aliases_load(tmp_path: Path, spelling: dict[str, str]) -> None:
    path = write(tmp_path, AIOS.format(**spelling))
    task = load_task(path, known_checks=CHECKS, known_steps=STEPS)
    assert task.about.responsible == "Dara (Sage)"
    assert task.about.responsible_type == "Agente"
    assert [(i.name, i.type, i.source, i.required, i.validation) for i in task.inputs] == [
        ("path", "path", "User Input", True, "Valid SQL file"),
        ("params", "object", "User Input", False, ""),
    ]
    assert [(o.name, o.type, o.destination, o.persisted) for o in task.about.outputs] == [
        ("ts", "string", "Memory", False)]
    assert [i.check for i in task.pre_conditions] == ["connection_established"]


def test_error_under_an_alias_points_at_the_aliased_key(tmp_path: Path) -> None:
    text = AIOS.format(responsible="responsável", entrada="Entrada", saida="Saída",
                       obrigatorio="obrigatório", validacao="validação").replace(
        "    obrigatório: true\n", "    obrigatório: sim  # <-\n")
    path = write(tmp_path, text)
    with pytest.raises(TaskDefinitionError) as info:
        load_task(path, known_checks=CHECKS, known_steps=STEPS)
    assert str(info.value).startswith(f"{path}:{marked_line(text)}: inputs[0].required: ")
    assert "expected a boolean" in str(info.value)


def test_parse_task_validates_text_without_a_file() -> None:
    task = parse_task(BASE, source="defs/sample.yaml", known_checks=CHECKS, known_steps=STEPS)
    assert task.retry_policy("connection").attempts == 3
    with pytest.raises(KeyError):
        task.retry_policy("missing")
    with pytest.raises(TaskDefinitionError, match="expected 'elsewhere'"):
        parse_task(BASE, source="elsewhere.yaml", known_checks=CHECKS, known_steps=STEPS)


# --------------------------------------------------------------------------- the `about` block

ABOUT = BASE.replace(
    "title: Sample task\npurpose: Exercise the loader\nresponsible: Dara (Sage)\n", "").replace(
    "outputs:\n  - name: ts\n    type: string\n    destination: Return value\n    persisted: false\n",
    "about:\n  title: Sample task\n  purpose: Exercise the loader\n  responsible: Dara (Sage)\n"
    "  outputs:\n    - name: ts\n      type: string\n      destination: Return value\n"
    "      persisted: false\n")


def test_shipped_files_keep_what_is_for_people_under_about() -> None:
    import yaml

    for path in sorted(SHIPPED_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        top = yaml.safe_load(text)
        assert "about" in top, path.name
        assert not set(top) & {"title", "purpose", "responsible", "responsible_type",
                               "atomic_layer", "elicit", "outputs"}, path.name
        assert "never reads it" in text, path.name  # the comment that says so


def test_the_top_level_aios_form_loads_into_about(tmp_path: Path) -> None:
    assert ABOUT != BASE
    top_level = load_task(write(tmp_path, BASE), known_checks=CHECKS, known_steps=STEPS)
    under_about = load_task(write(tmp_path, ABOUT), known_checks=CHECKS, known_steps=STEPS)
    assert top_level == under_about
    assert top_level.about.title == "Sample task"
    assert [o.name for o in top_level.about.outputs] == ["ts"]


ABOUT_CASES = [
    pytest.param(ABOUT + "title: Again  # <-\n",
                 ["title: 'title' is given both at the top level and under about; keep one"],
                 id="about-key-also-at-top-level"),
    pytest.param(ABOUT.replace("  title: Sample task\n", "  title: Sample task\n  colour: x  # <-\n"),
                 ["about: unknown key 'colour'", "allowed keys: title, purpose, responsible",
                  "AIOS aliases: saida"],
                 id="unknown-key-under-about"),
    pytest.param(ABOUT.replace("      persisted: false\n", "      persisted: nope  # <-\n"),
                 ["about.outputs[0].persisted", "expected a boolean"],
                 id="bad-output-under-about"),
    pytest.param(BASE.replace("    persisted: false\n", "    persisted: nope  # <-\n"),
                 ["outputs[0].persisted: expected a boolean"],
                 id="bad-top-level-output-is-reported-where-written"),
    pytest.param(ABOUT.replace("about:\n", "about:  # <-\n").replace("  title: Sample task\n", ""),
                 ["about: missing required key 'title'"],
                 id="about-without-title"),
]


@pytest.mark.parametrize(("text", "expected"), ABOUT_CASES)
def test_about_problems_name_file_and_line(tmp_path: Path, text: str,
                                           expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TaskDefinitionError) as info:
        load_task(path, known_checks=CHECKS, known_steps=STEPS)
    message = str(info.value)
    assert message.splitlines()[0].startswith(f"{path}:{marked_line(text)}: "), message
    for fragment in expected:
        assert fragment in message, (fragment, message)


# --------------------------------------------------------------------------- other registries

KNOWN = {"actions": {"ask", "menu"}, "details": {"reverse_script"}, "follow_ups": {"smoke_test"},
         "phases": {"plan_and_ask"}, "template_variables": {"path", "ts"}}
CHOICE = ("    kind: choice\n    options:\n      - label: Smoke\n        command: \"*smoke-test\"\n"
          "        run: smoke_test\n")

REGISTRY_CASES = [
    pytest.param(edit("    explanation: The file dbsage will run.\n",
                      "    explanation: The file dbsage will run.\n    action: asq  # <-\n"),
                 ["checkpoints[0].action", "unknown checkpoint action 'asq'", "did you mean 'ask'",
                  "registered checkpoint actions: ask, menu"], id="unknown-action"),
    pytest.param(edit("    explanation: The file dbsage will run.\n",
                      "    explanation: The file dbsage will run.\n    detail: script  # <-\n"),
                 ["checkpoints[0].detail", "unknown detail 'script'", "registered details: "
                  "reverse_script"], id="unknown-detail"),
    pytest.param(edit("    explanation: The file dbsage will run.\n",
                      "    explanation: The file dbsage will run.\n"
                      + CHOICE.replace("run: smoke_test", "run: smoke  # <-")),
                 ["checkpoints[0].options[0].run", "unknown follow-up 'smoke'",
                  "registered follow-ups: smoke_test"], id="unknown-follow-up"),
    pytest.param(BASE + "phases:\n  preflight: plan  # <-\n",
                 ["phases.preflight", "unknown phase 'plan'", "registered phases: plan_and_ask"],
                 id="unknown-phase"),
    pytest.param(edit('success_output: "Done at {ts}: {path}"\n',
                      'success_output: "Done at {ts}: {snapshot}"  # <-\n'),
                 ["success_output", "unknown placeholder '{snapshot}'", "the engine fills: path, ts"],
                 id="placeholder-the-engine-does-not-fill"),
    pytest.param(BASE + "on_checks_failed:\n  message: \"{failures} at {path}\"  # <-\n",
                 ["on_checks_failed.message", "unknown placeholder '{path}'",
                  "allowed: failures, ts"], id="on-checks-failed-placeholder"),
]


@pytest.mark.parametrize(("text", "expected"), REGISTRY_CASES)
def test_every_registry_the_engine_reads_is_checked(tmp_path: Path, text: str,
                                                    expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TaskDefinitionError) as info:
        load_task(path, known_checks=CHECKS, known_steps=STEPS, known=KNOWN)
    message = str(info.value)
    assert message.splitlines()[0].startswith(f"{path}:{marked_line(text)}: "), message
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_registered_names_load(tmp_path: Path) -> None:
    text = edit("    explanation: The file dbsage will run.\n",
                "    explanation: The file dbsage will run.\n    action: menu\n"
                "    detail: reverse_script\n" + CHOICE) + "phases:\n  preflight: plan_and_ask\n"
    task = load_task(write(tmp_path, text), known_checks=CHECKS, known_steps=STEPS, known=KNOWN)
    point = task.checkpoints[0]
    assert (point.action, point.detail, point.options[0].run) == ("menu", "reverse_script",
                                                                  "smoke_test")
    assert task.phases == {"preflight": "plan_and_ask"}
