"""The `*command` grammar: a table of lines, properties (hypothesis), help, import weight."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbsage.agent.commands import (
    COMMANDS,
    MODES,
    OPTIONS,
    CommandError,
    CommandSpec,
    Invocation,
    NotACommand,
    closest_command,
    complete,
    get_spec,
    help_text,
    normalise_duration,
    parse,
)
from dbsage.tools.errors import DbsageError

MIGRATION = "supabase/migrations/20250101000000_add_profiles.sql"

# ------------------------------------------------------------------ the table of lines

VALID: list[tuple[str, str, dict[str, str], dict[str, str | bool]]] = [
    (f"*apply-migration {MIGRATION}", "apply-migration", {"path": MIGRATION}, {}),
    ("*seed --mode yolo", "seed", {}, {"mode": "yolo"}),
    (f"*apply-migration {MIGRATION} --mode yolo", "apply-migration", {"path": MIGRATION},
     {"mode": "yolo"}),
    ('*apply "my dir/x y.sql" --mode=Preflight', "apply-migration", {"path": "my dir/x y.sql"},
     {"mode": "preflight"}),
    ("*migrate x.sql --yes --json --allow-destructive --allow-out-of-order --no-dry-run "
     "--force --rollback-script --answers a.yaml", "apply-migration", {"path": "x.sql"},
     {"yes": True, "json": True, "allow_destructive": True, "allow_out_of_order": True,
      "no_dry_run": True, "force": True, "rollback_script": True, "answers": "a.yaml"}),
    ("*rollback 20250101000000 --prepare-only", "rollback", {"ts": "20250101000000"},
     {"prepare_only": True}),
    ("*rollback --to 20250101000000 --accept-difference", "rollback", {},
     {"to": "20250101000000", "accept_difference": True}),
    ("*rollback 2025010100000", "rollback", {"ts": "2025010100000"}, {}),  # a version
    ("*apply x.sql --lock-timeout 1s --statement-timeout 5min", "apply-migration",
     {"path": "x.sql"}, {"lock_timeout": "1s", "statement_timeout": "5min"}),
    ("*apply x.sql --lock-timeout=500ms --statement-timeout off", "apply-migration",
     {"path": "x.sql"}, {"lock_timeout": "500ms", "statement_timeout": "0"}),
    ("*apply x.sql --lock-timeout '2 hours' --statement-timeout 0", "apply-migration",
     {"path": "x.sql"}, {"lock_timeout": "2h", "statement_timeout": "0"}),
    ("*apply --db postgresql://u:p@h:5432/d x.sql", "apply-migration", {"path": "x.sql"},
     {"db": "postgresql://u:p@h:5432/d"}),
    ("*apply -- -odd-name.sql", "apply-migration", {"path": "-odd-name.sql"}, {}),
    ("  *dry-run x.sql  ", "dry-run", {"path": "x.sql"}, {}),
    ("*DRY_RUN x.sql --json", "dry-run", {"path": "x.sql"}, {"json": True}),
    ("*dryrun 'a\"b.sql'", "dry-run", {"path": 'a"b.sql'}, {}),
    ("*rollback 20250101000000", "rollback", {"ts": "20250101000000"}, {}),
    ("*rollback LATEST --allow-data-loss --mode interactive", "rollback", {"ts": "latest"},
     {"allow_data_loss": True, "mode": "interactive"}),
    ("*undo latest --yes", "rollback", {"ts": "latest"}, {"yes": True}),
    ("*smoke-test", "smoke-test", {}, {}),
    ("*smoke --db 'host=/tmp dbname=x'", "smoke-test", {}, {"db": "host=/tmp dbname=x"}),
    (f"*plan {MIGRATION} --json", "plan", {"path": MIGRATION}, {"json": True}),
    ("*status", "status", {}, {}),
    ("*mode YOLO", "mode", {"mode": "yolo"}, {}),
    ("*help", "help", {}, {}),
    ("*help apply", "help", {"command": "apply-migration"}, {}),
    ("*? *dry-run", "help", {"command": "dry-run"}, {}),
    ("*exit", "exit", {}, {}),
    ("*quit", "exit", {}, {}),
    ("*rls-audit --json", "rls-audit", {}, {"json": True}),
    ("*hotpaths", "analyze-hotpaths", {}, {}),
    ("*rls --as 'Anon, authenticated' --claims '{\"sub\": \"u1\"}'", "rls-audit", {},
     {"as": "anon,authenticated", "claims": '{"sub": "u1"}'}),
    ("*analyze-hotpaths --top 05 --create-extension", "analyze-hotpaths", {},
     {"top": "5", "create_extension": True}),
    ("*up --atomic --to 20250101000000 --include-all", "up", {},
     {"atomic": True, "to": "20250101000000", "include_all": True}),
    ("*up --dry-run --json", "up", {}, {"dry_run": True, "json": True}),
    ("*new add_profiles", "new", {"name": "add_profiles"}, {}),
    ("*repair --status Reverted 20250101000000 20250102000000", "repair",
     {"versions": ("20250101000000", "20250102000000")}, {"status": "reverted"}),
    ("*repair --baseline --yes", "repair", {}, {"baseline": True, "yes": True}),
    ("*baseline --dry-run --to 20250101000000", "baseline", {},
     {"dry_run": True, "to": "20250101000000"}),
    ("*prune --keep 05", "prune", {}, {"keep": "5"}),
]

# (line, error class, text in the message, text in the hint)
INVALID: list[tuple[str, type[CommandError], str, str]] = [
    ("apply my migration", NotACommand, "Not a *command", "*help"),
    ("", NotACommand, "Not a *command", "*help"),
    ("*", CommandError, "No command given", "*help"),
    ("*dyr-run x.sql", CommandError, "Unknown command *dyr-run. Did you mean *dry-run?", "*help"),
    ("*aply x.sql", CommandError, "Did you mean *apply-migration?", "*help"),
    ("*xyzzy", CommandError, "Unknown command *xyzzy.", "*help"),
    ("*dry-run", CommandError, "*dry-run needs PATH", "Usage: *dry-run PATH"),
    ("*dry-run a.sql b.sql", CommandError, "unexpected argument(s): b.sql", "Usage: *dry-run"),
    ("*dry-run ''", CommandError, "PATH must not be empty", "Usage: *dry-run"),
    ("*dry-run '   '", CommandError, "PATH must not be empty", "Usage: *dry-run"),
    ('*dry-run "my dir/x.sql', CommandError, "Unbalanced quote", "quotes"),
    ("*dry-run x.sql\\", CommandError, "Unbalanced quote", "quotes"),
    ("*dry-run x.sql --mode yolo", CommandError, "*dry-run has no option --mode",
     "Usage: *dry-run"),
    ("*status extra", CommandError, "unexpected argument(s): extra", "Usage: *status"),
    ("*status --bogus", CommandError, "has no option --bogus", "Usage: *status"),
    ("*status --json --json", CommandError, "--json is given twice", "Usage: *status"),
    ("*status --json=yes", CommandError, "--json takes no value", "Usage: *status"),
    ("*rollback ../20250101000000", CommandError, "not a path", "Usage: *rollback"),
    ("*rollback supabase/migrations/x.sql", CommandError, "not a path", "Usage: *rollback"),
    ("*rollback 2025010100000a", CommandError, "expected a version or run TS",
     "Usage: *rollback"),
    ("*rollback supabase/snapshots/20250101000000_before.sql", CommandError, "not a path",
     "Usage: *rollback"),
    ("*rollback 20250101000000 --allow-destructive", CommandError,
     "has no option --allow-destructive", "Usage: *rollback"),
    ("*apply x.sql --mode fast", CommandError, "unknown mode 'fast'", "[--mode MODE]"),
    ("*apply x.sql --allow-data-loss", CommandError, "has no option --allow-data-loss",
     "Usage: *apply-migration"),
    ("*rollback latest --force", CommandError, "has no option --force", "Usage: *rollback"),
    ("*apply x.sql --mode", CommandError, "--mode needs a value", "Usage: *apply-migration"),
    ("*apply x.sql --mode --json", CommandError, "--mode needs a value", "Usage:"),
    ("*apply x.sql --lock-timeout 5m", CommandError, "unknown unit 'm'", "500ms, 1s, 5min"),
    ("*apply x.sql --lock-timeout 10", CommandError, "needs a unit", "Usage: *apply-migration"),
    ("*apply x.sql --statement-timeout 1.5s", CommandError, "not a duration", "5min"),
    ("*apply x.sql --lock-timeout 25d", CommandError, "longer than PostgreSQL allows", "2h"),
    ("*apply x.sql --db -x", CommandError, "--db needs a value", "Usage:"),
    ("*apply x.sql --db=", CommandError, "--db needs a database URL", "Usage:"),
    ("*mode", CommandError, "*mode needs yolo|interactive|preflight", "Usage: *mode"),
    ("*mode turbo", CommandError, "unknown mode 'turbo'", "Usage: *mode"),
    ("*help dyr-run", CommandError, "Did you mean *dry-run?", "Usage: *help [COMMAND]"),
    ("*exit now", CommandError, "unexpected argument(s): now", "Usage: *exit"),
    ("*new Add-Profiles", CommandError, "lowercase letters, digits and underscores",
     "Usage: *new NAME"),
    ("*new", CommandError, "*new needs NAME", "Usage: *new NAME"),
    ("*repair --status applied v1", CommandError, "digits only", "Usage: *repair [VERSION...]"),
    ("*repair --status done 1", CommandError, "applied or reverted", "Usage: *repair"),
    ("*up --to latest", CommandError, "digits only", "Usage: *up"),
    ("*prune --keep many", CommandError, "whole number", "Usage: *prune"),
    ("*rls-audit --as admin", CommandError, "ROLES are anon, authenticated and/or service_role",
     "Usage: *rls-audit"),
    ("*rls-audit --claims '[1]'", CommandError, "JSON must be a JSON object", "Usage: *rls-audit"),
    ("*analyze-hotpaths --top 0", CommandError, "at least 1", "Usage: *analyze-hotpaths"),
]


@pytest.mark.parametrize(("line", "command", "args", "options"), VALID)
def test_valid_line(line: str, command: str, args: dict[str, str],
                    options: dict[str, str | bool]) -> None:
    assert parse(line) == Invocation(command, args, options, line)


@pytest.mark.parametrize(("line", "error", "message", "hint"), INVALID)
def test_invalid_line(line: str, error: type[CommandError], message: str, hint: str) -> None:
    with pytest.raises(error) as caught:
        parse(line)
    assert type(caught.value) is error
    assert message in caught.value.message
    assert hint in (caught.value.hint or "")


def test_the_table_is_large_enough() -> None:
    assert len(VALID) + len(INVALID) >= 25
    assert {command for _, command, _, _ in VALID} == {spec.name for spec in COMMANDS}


def test_star_is_optional_from_the_cli() -> None:
    assert parse("dry-run x.sql", require_star=False) == Invocation(
        "dry-run", {"path": "x.sql"}, {}, "dry-run x.sql")
    assert parse("*status", require_star=False).command == "status"
    with pytest.raises(NotACommand):
        parse("dry-run x.sql")


def test_blank_line_from_the_cli_is_an_error_not_free_text() -> None:
    with pytest.raises(CommandError) as caught:
        parse("   ", require_star=False)
    assert type(caught.value) is CommandError
    assert "No command given" in caught.value.message


def test_errors_belong_to_the_dbsage_tree_with_exit_code_2() -> None:
    with pytest.raises(DbsageError) as caught:
        parse("*nope")
    assert caught.value.exit_code == 2
    assert issubclass(NotACommand, CommandError)
    assert caught.value.to_dict()["error"] == "CommandError"


# ------------------------------------------------------------------ every option, every command


def _option_tokens(flag: str) -> list[str]:
    """A valid use of the option `flag` as command-line words."""
    option = OPTIONS[flag]
    return [flag, option.example] if option.takes_value else [flag]


def _args_line(spec: CommandSpec) -> str:
    """A valid `*command ARGS` line for `spec`, without options."""
    values = {"path": "x.sql", "ts": "latest", "mode": "yolo", "command": "status",
              "name": "add_profiles"}
    return " ".join(["*" + spec.name] + [values[a.key] for a in spec.args if not a.optional])


@pytest.mark.parametrize("spec", COMMANDS, ids=lambda s: s.name)
@pytest.mark.parametrize("flag", list(OPTIONS))
def test_each_command_accepts_exactly_its_declared_options(spec: CommandSpec, flag: str) -> None:
    line = " ".join([_args_line(spec), *_option_tokens(flag)])
    if spec.option(flag) is None:
        with pytest.raises(CommandError, match=f"has no option {flag}"):
            parse(line)
    else:
        assert OPTIONS[flag].key in parse(line).options


def test_the_option_sets_are_as_documented() -> None:
    declared = {spec.name: {o.flag for o in spec.options} for spec in COMMANDS}
    assert declared["apply-migration"] == set(OPTIONS) - {
        "--allow-data-loss", "--prepare-only", "--exposed-schemas", "--as", "--claims", "--top",
        "--create-extension",
        # up's batch options, new's, repair's and prune's (apply without PATH runs up)
        "--atomic", "--to", "--include-all", "--dry-run", "--status", "--baseline", "--keep",
        "--rollback-plans", "--accept-difference"}
    assert declared["rls-audit"] == {"--db", "--exposed-schemas", "--as", "--claims", "--json"}
    assert declared["analyze-hotpaths"] == {"--top", "--db", "--statement-timeout",
                                            "--create-extension", "--json"}
    assert declared["rollback"] >= {"--prepare-only", "--allow-data-loss", "--answers", "--to",
                                    "--accept-difference"}
    assert "--force" not in declared["rollback"]  # it was accepted and ignored
    assert declared["status"] == {"--db", "--json"}
    assert declared["mode"] == declared["help"] == declared["exit"] == set()
    assert "--allow-destructive" not in declared["rollback"]


def test_names_and_aliases_are_unique() -> None:
    names = [n for spec in COMMANDS for n in (spec.name, *spec.aliases)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1s", "1s"), ("500ms", "500ms"), ("5min", "5min"), ("2h", "2h"), ("1d", "1d"),
     ("off", "0"), ("OFF", "0"), ("0", "0"), ("0s", "0"), ("007s", "7s"), ("3 seconds", "3s"),
     ("10Min", "10min"), ("2hours", "2h"), ("250msec", "250ms")],
)
def test_durations_normalise_to_postgresql_intervals(value: str, expected: str) -> None:
    assert normalise_duration(value) == expected


@pytest.mark.parametrize("value", ["", "1", "5m", "1.5s", "-1s", "s", "1 fortnight", "9" * 40,
                                   "25d", "1s2"])
def test_bad_durations_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalise_duration(value)


# ------------------------------------------------------------------ properties (hypothesis)

VOCABULARY = [
    *(spec.name for spec in COMMANDS), *(a for spec in COMMANDS for a in spec.aliases),
    *OPTIONS, "--", "-", "=", "'", '"', "\\", "latest", "20250101000000", "../x", "x.sql",
    "yolo", "1s", "off", "*", "--mode=", "--db=", "\x00", "é", " ",
]
vocabulary_lines = st.lists(st.sampled_from(VOCABULARY), max_size=8).map(
    lambda words: "*" + " ".join(words))


@settings(max_examples=300, deadline=None)
@given(line=st.one_of(st.text(), vocabulary_lines), require_star=st.booleans())
def test_parse_raises_only_command_errors(line: str, require_star: bool) -> None:
    try:
        invocation = parse(line, require_star=require_star)
    except CommandError as exc:
        assert exc.message
    else:
        assert invocation.command in {spec.name for spec in COMMANDS}
        assert invocation.raw == line


def _arg_value(key: str) -> st.SearchStrategy[str]:
    """Valid values of a positional argument, by its key."""
    return {
        "path": st.text(min_size=1).filter(lambda s: bool(s.strip()) and "\x00" not in s),
        "ts": st.one_of(st.just("latest"), st.from_regex(r"[0-9]{14}", fullmatch=True)),
        "mode": st.sampled_from(MODES),
        "command": st.sampled_from([spec.name for spec in COMMANDS]),
        "name": st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True),
        "versions": st.lists(st.from_regex(r"[0-9]{1,14}", fullmatch=True), min_size=1,
                             max_size=3).map(tuple),
    }[key]


durations = st.one_of(
    st.just("0"),
    st.builds("{}{}".format, st.integers(1, 500), st.sampled_from(["ms", "s", "min", "h"])),
    st.builds("{}d".format, st.integers(1, 24)),
)


def _option_value(flag: str) -> st.SearchStrategy[str | bool]:
    """Valid (normalised) values of an option, by its flag."""
    return {
        "--mode": st.sampled_from(MODES),
        "--db": st.sampled_from(["postgresql://u:p@h:5432/d", "postgres://h/d?sslmode=require",
                                 "host=/tmp dbname=x", "host='/my dir' user=me"]),
        "--lock-timeout": durations,
        "--statement-timeout": durations,
        "--answers": st.sampled_from(["answers.yaml", "ci/my answers.yml"]),
        "--exposed-schemas": st.sampled_from(["public", "public,api"]),
        "--as": st.sampled_from(["anon", "anon,authenticated", "service_role"]),
        "--claims": st.sampled_from(['{"sub": "u1"}', '{"sub": "u 2", "app_metadata": {}}']),
        "--top": st.sampled_from(["1", "10"]),
        "--version": st.from_regex(r"[0-9]{1,14}", fullmatch=True),
        "--to": st.from_regex(r"[0-9]{1,14}", fullmatch=True),
        "--status": st.sampled_from(["applied", "reverted"]),
        "--keep": st.sampled_from(["0", "20"]),
    }.get(flag, st.just(True))


@st.composite
def invocations(draw: st.DrawFn) -> Invocation:
    """A valid invocation of any command with a random subset of its options."""
    spec = draw(st.sampled_from(COMMANDS))
    args = {a.key: draw(_arg_value(a.key)) for a in spec.args
            if not a.optional or draw(st.booleans())}
    chosen = draw(st.lists(st.sampled_from(spec.options), unique=True)) if spec.options else []
    options = {o.key: draw(_option_value(o.flag)) for o in chosen}
    return Invocation(spec.name, args, options)


def _line(invocation: Invocation, star: bool) -> str:
    """A command line for `invocation`, written as a user would (quotes, `--` before a path
    that starts with a dash)."""
    spec = invocation.spec
    words = [("*" if star else "") + spec.name]
    for option in spec.options:
        value = invocation.options.get(option.key)
        if value is True:
            words.append(option.flag)
        elif isinstance(value, str):
            words += [option.flag, shlex.quote(value)]
    positionals = [p for a in spec.args if a.key in invocation.args
                   for p in ((invocation.args[a.key],) if isinstance(invocation.args[a.key], str)
                             else invocation.args[a.key])]
    if any(p.startswith("-") for p in positionals):
        words.append("--")
    return " ".join(words + [shlex.quote(p) for p in positionals])


@settings(max_examples=300, deadline=None)
@given(invocation=invocations(), star=st.booleans())
def test_written_lines_parse_back_to_the_same_invocation(invocation: Invocation,
                                                        star: bool) -> None:
    parsed = parse(_line(invocation, star), require_star=star)
    assert (parsed.command, parsed.args, parsed.options) == (
        invocation.command, invocation.args, invocation.options)


# ------------------------------------------------------------------ help, completion, free text


@pytest.mark.parametrize("spec", COMMANDS, ids=lambda s: s.name)
def test_every_command_has_summary_usage_and_help(spec: CommandSpec) -> None:
    assert spec.summary.strip() and "\n" not in spec.summary
    assert spec.usage.startswith(f"*{spec.name}")
    text = help_text(spec.name)
    assert f"Usage: {spec.usage}" in text
    assert f"Example: {spec.example}" in text
    assert all(o.flag in text for o in spec.options)
    assert parse(spec.example).command == spec.name
    assert f"*{spec.name}" in help_text()
    assert spec.summary in help_text()


def test_help_is_plain_text() -> None:
    texts = [help_text(), *(help_text(spec.name) for spec in COMMANDS)]
    for text in texts:
        assert "[bold" not in text and "[/" not in text and "\x1b[" not in text


def test_help_by_alias_and_unknown_command() -> None:
    assert help_text("quit") == help_text("exit") == help_text("*exit")
    with pytest.raises(CommandError, match=r"Did you mean \*rollback\?"):
        help_text("rollbak")


def test_get_spec_resolves_aliases() -> None:
    assert get_spec("apply").name == "apply-migration"
    assert get_spec("*Dry_Run").name == "dry-run"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("*dr", ["*dry-run"]), ("dr", ["dry-run"]), ("*a", ["*analyze-hotpaths", "*apply-migration"]),
     ("*r", ["*repair", "*rls-audit", "*rollback"]),
     ("*s", ["*seed", "*smoke-test", "*status"]), ("*q", ["*quit"]),
     ("*un", ["*undo"]), ("*DRY", ["*dry-run"]), ("*x", []), ("*dry-run ", [])],
)
def test_complete(prefix: str, expected: list[str]) -> None:
    assert complete(prefix) == expected


def test_complete_everything() -> None:
    assert complete("*") == sorted("*" + spec.name for spec in COMMANDS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("apply my migration", "apply-migration"), ("undo", "rollback"),
     ("roll back the last one", "rollback"), ("dry run my migration", "dry-run"),
     ("preview the migration", "dry-run"), ("what is pending?", "status"),
     ("run the tests", "smoke-test"), ("are my tables secure", "rls-audit"),
     ("which queries are slow", "analyze-hotpaths"), ("switch to yolo mode", "mode"),
     ("is it safe?", "plan"), ("bye", "exit"), ("hello there", None), ("", None)],
)
def test_closest_command_for_free_text(text: str, expected: str | None) -> None:
    assert closest_command(text) == expected


# ------------------------------------------------------------------ import weight

HEAVY = ["typer", "rich", "langchain", "langchain_core", "psycopg", "prompt_toolkit"]
PROBE = (
    "import sys, json\n{pre}import dbsage.agent.commands\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))\n"
)


def _heavy_modules_after_import(pre: str = "") -> list[str]:
    """Import the grammar in a fresh interpreter; the heavy modules that got loaded."""
    code = PROBE.format(pre=pre, heavy=set(HEAVY))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_importing_the_grammar_loads_no_heavy_module() -> None:
    assert _heavy_modules_after_import() == []


def test_the_import_probe_would_notice_a_heavy_module() -> None:
    assert "rich" in _heavy_modules_after_import(pre="import rich\n")
