"""CLI conventions, through the real `dbsage` command: --version, -h, help, completion, global
options before or after the subcommand, clean usage lines, --list-checkpoints and --answers,
the exit-code table of the README, one exit code per situation."""

from __future__ import annotations

import functools
import itertools
import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES, REPO, Db
from helpers import fast_retry, migration, run_cli

from dbsage.tools.errors import EXIT_CODE_MEANINGS, ExitCode, exit_code_table

HERE = Path.cwd()
UNREACHABLE = "postgresql://u@127.0.0.1:1/x"
COMMANDS = ["apply", "dry-run", "plan", "rollback", "smoke-test", "seed", "status",
            "rls-audit", "analyze-hotpaths", "up", "new", "repair", "baseline", "prune", "help",
            "completion", "chat", "db url", "db start", "db stop"]
WIDTH = 78  # click's help width at COLUMNS=80


def cli(*args: str, cwd: Path = HERE, **env: str) -> tuple[int, str, str]:
    done = run_cli(*args, cwd=cwd, env={"COLUMNS": "80", **env})
    return done.returncode, done.stdout, done.stderr


@functools.cache
def helped(*args: str) -> tuple[int, str, str]:
    """`dbsage ARGS` run once per test session (help output does not change)."""
    return cli(*args)


# --------------------------------------------------------------------------- conventions


def test_version_and_short_version() -> None:
    for flag in ("--version", "-V"):
        code, out, _ = cli(flag)
        assert (code, out) == (0, f"dbsage {version('dbsage')}\n")


def test_dash_h_is_help_everywhere_and_help_command_is_the_same() -> None:
    root = helped("--help")
    assert root[0] == 0 and "Usage: dbsage [OPTIONS] COMMAND" in root[1]
    assert helped("-h") == root and cli("help") == root
    for command in COMMANDS:
        words = command.split()
        long = cli(*words, "--help")
        assert long[0] == 0 and long[1].startswith(f"Usage: dbsage {command} "), command
        assert helped(*words, "-h") == long, command
        assert cli("help", *words) == long, command


def test_help_of_an_unknown_command_is_an_error() -> None:
    code, _, err = cli("help", "aply")
    assert code == 2 and "Unknown command 'aply'" in err and "dbsage help apply" in err


def _usage(help_text: str) -> str:
    return help_text.splitlines()[0]


def test_usage_lines_name_arguments_plainly() -> None:
    usages = {c: _usage(helped(*c.split(), "-h")[1]) for c in COMMANDS}
    assert usages["dry-run"] == "Usage: dbsage dry-run [OPTIONS] PATH"
    assert usages["apply"] == "Usage: dbsage apply [OPTIONS] [PATH]"
    assert usages["repair"] == "Usage: dbsage repair [OPTIONS] [VERSION...]"
    assert usages["rollback"] == "Usage: dbsage rollback [OPTIONS] [VERSION|TS|latest]"
    assert _usage(helped("dryrun", "-h")[1]) == usages["dry-run"]  # an alias: its command's name
    for command, usage in usages.items():
        assert not re.search(r"[{}<>]|:TEXT|<str>", usage), usage
        help_text = helped(*command.split(), "-h")[1]
        assert "<str>" not in help_text and ":TEXT" not in help_text, command


def _description(help_text: str) -> list[list[str]]:
    """The paragraphs of a help's description (between the usage and the first section)."""
    lines = help_text.splitlines()[1:]
    end = next(i for i, ln in enumerate(lines) if ln in ("Arguments:", "Options:", "Commands:"))
    paragraphs: list[list[str]] = [[]]
    for line in lines[:end]:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


def test_docstrings_are_rewrapped_not_hard_wrapped() -> None:
    """Every line of a description is as full as the width allows: the next line's first word
    would not have fitted on it (a docstring's own line breaks would leave short lines)."""
    for command in COMMANDS:
        paragraphs = _description(helped(*command.split(), "-h")[1])
        assert paragraphs, command
        for para in paragraphs:
            for line, following in itertools.pairwise(para):
                assert len(line) <= WIDTH, (command, line)
                assert len(line) + 1 + len(following.split()[0]) > WIDTH, (command, line)
    apply = " ".join(" ".join(p) for p in _description(helped("apply", "-h")[1]))
    assert "commits with it. Without PATH, every pending migration" in " ".join(apply.split())


def test_errors_in_the_shell_use_the_shells_syntax(tmp_path: Path) -> None:
    code, _, err = cli("dry-run", "x.sql", "--db", "garbage", cwd=tmp_path)
    assert code == 2 and err.startswith("❌ dbsage dry-run --db: --db needs a database URL")
    assert "Usage: dbsage dry-run PATH [--db URL]" in err
    code, _, err = cli("rollback", cwd=tmp_path)
    assert code == 2 and "dbsage rollback needs VERSION|TS|latest" in err
    assert "*" not in err


def test_the_command_list_shows_whole_summaries() -> None:
    listing = helped("--help")[1].split("Commands:")[1]
    assert "..." not in listing and "..." not in helped("db", "-h")[1].split("Commands:")[1]
    assert "plain-language questions with DBSAGE_MODEL set" in " ".join(listing.split())


def test_shell_completion_scripts_and_completing() -> None:
    code, script, _ = cli("completion", "bash")
    assert code == 0 and "_DBSAGE_COMPLETE" in script and "complete " in script
    for shell in ("zsh", "fish", "powershell"):
        assert cli("completion", shell)[0] == 0
    code, _, err = cli("completion", "tcsh")
    assert code == 2 and "bash, zsh, fish" in err
    assert "--install-completion" in helped("--help")[1]
    # What the shell asks dbsage when TAB is pressed.
    code, out, _ = cli(_DBSAGE_COMPLETE="complete_bash", COMP_WORDS="dbsage dry", COMP_CWORD="1")
    assert (code, out.split()) == (0, ["dry-run"])
    code, out, _ = cli(_DBSAGE_COMPLETE="complete_bash", COMP_WORDS="dbsage apply --list",
                       COMP_CWORD="2")
    assert out.split() == ["--list-checkpoints"]


# --------------------------------------------------------------------------- global options


def test_global_options_before_the_subcommand_are_the_same_options(tmp_path: Path) -> None:
    (tmp_path / "supabase" / "migrations").mkdir(parents=True)
    path = migration(tmp_path, "20250101000000_x.sql", "select 1;")
    for before, after in [
        (["--db", "mysql://h/db", "dry-run", str(path)], ["dry-run", str(path), "--db", "mysql://h/db"]),
        (["--mode", "fast", "apply", str(path)], ["apply", str(path), "--mode", "fast"]),
        (["-m", "fast", "apply", str(path)], ["apply", str(path), "-m", "fast"]),
    ]:
        first, second = cli(*before, cwd=tmp_path), cli(*after, cwd=tmp_path)
        assert first[0] == 2 and first == second, (first, second)
    code, _, err = cli("--db", UNREACHABLE, "dry-run", str(path), "--db", "postgresql://a@b/c",
                       cwd=tmp_path)
    assert code == 2 and "--db is given twice" in err
    code, _, err = cli("--mode", "yolo", "status", cwd=tmp_path)
    assert code == 2 and "`dbsage status` has no --mode option" in err
    code, out, err = cli("-q", "dry-run", str(path), "--db", UNREACHABLE, cwd=tmp_path)
    assert code == 2 and len(out.strip().splitlines()) == 1, out + err  # --quiet: one line
    assert not (tmp_path / ".dbsage").exists() and not (tmp_path / "supabase" / "snapshots").exists()


def test_global_options_run_the_command(db18: Db, project: Path) -> None:
    path = migration(project, "20250101000000_t.sql", "create table t (id int);\n")
    code, out, err = cli("--db", db18.url, "--json", "--mode", "yolo", "apply", str(path),
                         cwd=project)
    assert code == 0, out + err
    assert json.loads(out)["status"] == "applied"
    before = cli("--db", db18.url, "--json", "status", cwd=project)
    after = cli("status", "--json", "--db", db18.url, cwd=project)
    assert before[0] == 0 and before == after
    assert json.loads(before[1])["applied"] == ["20250101000000_t.sql"]
    code, out, _ = cli("--db", db18.url, "db", "url", cwd=project)
    assert code == 0 and out.strip() == db18.url


# --------------------------------------------------------------------------- --answers


def _definition(task: str) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO / "task_definitions" / f"{task}.yaml").read_text())


@pytest.mark.parametrize("task", ["apply", "up", "rollback", "seed"])
def test_list_checkpoints_comes_from_the_task_definition(task: str) -> None:
    name = {"apply": "apply-migration"}.get(task, task)
    d = _definition(name)
    code, out, _ = cli(task, "--list-checkpoints", "--json")
    assert code == 0
    listed = {p["id"]: p for p in json.loads(out)["checkpoints"]}
    expected = {c["id"] for c in d.get("checkpoints", [])}
    expected |= {f"override_{i['id']}" for phase in ("pre_conditions", "post_conditions",
                                                      "acceptance_criteria")
                 for i in d.get(phase, []) if i.get("override")}
    assert expected <= set(listed)
    assert set(listed) - expected <= {"run_dry_run_now"}  # the dry-run gate's follow-up
    for c in d.get("checkpoints", []):
        answers = [str(i) for i in range(1, len(c.get("options", [])) + 1)] if c.get(
            "kind") == "choice" else ["yes", "no"]
        assert listed[c["id"]]["answers"] == answers
    code, text, _ = cli(task, "--list-checkpoints")
    assert code == 0 and all(f"  {i} " in text for i in listed)


def test_unknown_checkpoint_id_or_answer_is_refused_before_anything(project: Path) -> None:
    path = migration(project, "20250101000000_x.sql", "create table x (id int);")
    answers = project / "answers.yaml"
    answers.write_text("confirm_migration_file: yes\nconfirm_aply: yes\n")
    code, out, err = cli("apply", str(path), "--answers", str(answers), "--db", UNREACHABLE,
                         cwd=project)
    assert code == 2, out + err
    assert f"{answers}:2: unknown checkpoint id 'confirm_aply'" in out + err
    assert "confirm_apply" in out + err and "dbsage apply --list-checkpoints" in out + err
    assert "Cannot connect" not in out + err
    answers.write_text("confirm_apply: maybe\n")
    code, out, err = cli("apply", str(path), "--answers", str(answers), "--db", UNREACHABLE,
                         cwd=project)
    assert code == 2 and f"{answers}:1: confirm_apply: 'maybe'" in out + err
    assert not (project / "supabase" / "snapshots").exists()


def _readme() -> str:
    return (REPO / "README.md").read_text()


def test_the_readme_answers_example_works(db18: Db, project: Path) -> None:
    readme = _readme()
    block = readme.split("<!-- answers-example -->")[1]
    answers = block.split("```yaml\n")[1].split("```")[0]
    command = re.search(r"`(dbsage apply [^`]+--answers answers\.yaml)`", block)
    assert command, block
    (project / "answers.yaml").write_text(answers)
    words = command.group(1).split()[1:]
    target = project / words[1]
    target.write_text((EXAMPLES / target.name).read_text())
    code, out, err = cli(*words, "--db", db18.url, cwd=project)
    assert code == 0, out + err
    assert "Migration Applied Successfully" in out
    assert db18.scalar("select count(*) from supabase_migrations.schema_migrations") == 1


# --------------------------------------------------------------------------- exit codes


def test_readme_exit_code_table_is_the_enum() -> None:
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)
    readme = _readme()
    table = readme.split("<!-- exit-codes")[1].split("-->", 1)[1].split("<!-- /exit-codes -->")[0]
    assert table.strip() == exit_code_table()
    rows = [ln for ln in table.strip().splitlines()[2:]]
    assert [int(r.split("|")[1]) for r in rows] == [c.value for c in ExitCode]


LOCKED = "alter table t add column c int;\n"


@pytest.mark.parametrize("sql", [LOCKED, "insert into t values (1 / 0);\n"],
                         ids=["lock timeout", "failing statement"])
def test_the_same_failure_exits_the_same_from_the_gate_dry_run_and_the_apply(
        db18: Db, project: Path, sql: str) -> None:
    """interactive runs the dry-run gate first (answered: no dry-run yet, run one now); yolo
    goes straight to the apply. A lock timeout or a failing statement is the same failure."""
    from dbsage.agent.modes import ScriptedAsker
    from dbsage.agent.runner import RunOptions, run_apply

    db18.execute("create table t (id int)")
    path = migration(project, "20250101000000_x.sql", sql)
    holder = db18.connect(autocommit=False)
    try:
        holder.execute("select * from t")  # ACCESS SHARE until the end: ALTER waits
        common = {"db": db18.url, "project_dir": project, "lock_timeout": "50ms",
                  "lock_retry": fast_retry(2)}
        gate = run_apply(path, RunOptions(mode="interactive", asker=ScriptedAsker({
            "confirm_migration_file": "yes", "confirm_database": "yes", "dry_run_done": "no",
            "run_dry_run_now": "yes"}), **common))  # type: ignore[arg-type]
        applied = run_apply(path, RunOptions(mode="yolo", **common))  # type: ignore[arg-type]
    finally:
        holder.close()
    assert gate.exit_code == applied.exit_code == ExitCode.FAILED, (gate.error, applied.error)
    assert gate.error and applied.error
    assert gate.error["error"] == applied.error["error"]
    assert gate.error.get("kind") == applied.error.get("kind")
    if sql == LOCKED:
        assert gate.error["error"] == "LockTimeoutExhaustedError"
    assert db18.scalar("select count(*) from information_schema.columns where table_name = 't'"
                       ) == 1


def test_a_failing_pre_flight_dry_run_exits_1_for_a_file_and_for_a_batch(
        db18: Db, project: Path) -> None:
    """Pre-flight dry-runs first, for `apply` as for `up`: its failure is a failure (1), as a
    dry-run's anywhere, not a refusal (6)."""
    from dbsage.agent.modes import YesAsker
    from dbsage.agent.runner import RunOptions, run_apply, run_named

    db18.execute("create table t (id int)")
    path = migration(project, "20250101000000_x.sql", "insert into t values (1 / 0);\n")
    one = run_apply(path, RunOptions(mode="preflight", db=db18.url, project_dir=project,
                                     asker=YesAsker()))
    batch = run_named("up", RunOptions(mode="preflight", db=db18.url, project_dir=project,
                                       asker=YesAsker()))
    assert one.exit_code == batch.exit_code == ExitCode.FAILED, (one.error, batch.error)
    assert "division by zero" in str(one.error) and "division by zero" in str(batch.error)
    assert db18.scalar("select count(*) from t") == 0



def test_a_script_stops_when_the_configured_model_cannot_be_used(tmp_path: Path) -> None:
    """Free text in `chat --script` with DBSAGE_MODEL set to a model dbsage cannot use fails
    the script (it used to end 0 with the error as Dara's answer)."""
    script = tmp_path / "s.txt"
    script.write_text("what is pending?\n*help\n")
    done = run_cli("chat", "--script", str(script), cwd=tmp_path,
                   env={"DBSAGE_MODEL": "nosuchprovider:x"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Unable to infer model provider" in done.stdout
    assert "Stopped at line 1: what is pending?" in done.stdout


def test_only_the_subcommand_run_is_built_and_anything_unclear_builds_them_all() -> None:
    from dbsage.agent.cli import _invoked

    assert _invoked(["apply", "x.sql", "--mode", "yolo"]) == "apply"
    assert _invoked(["--db", "postgresql://h/d", "-m", "yolo", "--json", "apply"]) == "apply"
    assert _invoked(["--db=postgresql://h/d", "migrate", "x.sql"]) == "apply"  # an alias
    for argv in ([], ["--help"], ["-V"], ["help", "apply"], ["db", "start"], ["aply"],
                 ["-vq", "apply"], ["--install-completion"], ["completion", "bash"]):
        assert _invoked(argv) is None, argv
