"""tools/project.py: supabase/config.toml as the Supabase CLI writes it, into frozen dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dbsage.tools.errors import ConfigError
from dbsage.tools.project import (
    ApiConfig,
    ProjectConfig,
    SeedConfig,
    parse_project_config,
    read_project_config,
)

# The shape `supabase init` writes (CLI v2), trimmed, with a project's own edits.
CONFIG = """\
# For detailed configuration reference documentation, visit:
# https://supabase.com/docs/guides/local-development/cli/config
# A string used to distinguish different Supabase projects on the same host. Defaults to the
# working directory name when running `supabase init`.
project_id = "recipes"

[api]
enabled = true
# Port to use for the API URL.
port = 54321
# Schemas to expose in your API. Tables, views and stored procedures in this schema will get API
# endpoints. `public` and `graphql_public` schemas are included by default.
schemas = ["public", "graphql_public", "api"]
# Extra schemas to add to the search_path of every request.
extra_search_path = ["public", "extensions"]
# The maximum number of rows returns from a view, table, or stored procedure. Limits payload size
# for accidental or malicious requests.
max_rows = 500

[api.tls]
enabled = false

[db]
# Port to use for the local database URL.
port = 54422
# Port used by db diff command to initialize the shadow database.
shadow_port = 54420
# The database major version to use. This has to be the same as your remote database's. Run `SHOW
# server_version;` on the remote database to check.
major_version = 15

[db.pooler]
enabled = false
port = 54329
pool_mode = "transaction"
default_pool_size = 20
max_client_conn = 100

[db.migrations]
# If disabled, migrations will be skipped during a db push or reset.
enabled = true
schema_paths = []

[db.seed]
# If enabled, seeds the database after migrations during a db reset.
enabled = true
# Specifies an ordered list of seed files to load during db reset.
# Supports glob patterns relative to supabase directory: "./seeds/*.sql"
sql_paths = ["./seeds/*.sql", "./seed.sql"]

[realtime]
enabled = true

[studio]
enabled = true
port = 54323
api_url = "http://127.0.0.1"
openai_api_key = "env(OPENAI_API_KEY)"

[auth]
enabled = true
site_url = "http://127.0.0.1:3000"
additional_redirect_urls = ["https://127.0.0.1:3000"]
jwt_expiry = 3600
enable_signup = true

[auth.email]
enable_signup = true
double_confirm_changes = true
enable_confirmations = false

[auth.external.apple]
enabled = false
client_id = ""
secret = "env(SUPABASE_AUTH_EXTERNAL_APPLE_SECRET)"

[edge_runtime]
enabled = true
policy = "oneshot"
inspector_port = 8083
"""


def _project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "supabase").mkdir(exist_ok=True)
    (tmp_path / "supabase" / "config.toml").write_text(text)
    return tmp_path


def test_a_realistic_config(tmp_path: Path) -> None:
    config = read_project_config(_project(tmp_path, CONFIG))
    assert config.path == tmp_path / "supabase" / "config.toml"
    assert config.supabase_dir == tmp_path / "supabase"
    assert config.project_id == "recipes"
    assert config.api == ApiConfig(enabled=True, port=54321,
                                   schemas=("public", "graphql_public", "api"),
                                   extra_search_path=("public", "extensions"), max_rows=500)
    assert (config.db.port, config.db.shadow_port, config.db.major_version) == (54422, 54420, 15)
    assert (config.migrations.enabled, config.migrations.schema_paths) == (True, ())
    assert config.seed == SeedConfig(True, ("./seeds/*.sql", "./seed.sql"))
    # everything else is kept, unread, for whoever needs it
    assert config.raw["auth"]["external"]["apple"]["enabled"] is False
    assert config.raw["db"]["pooler"]["pool_mode"] == "transaction"
    assert config.line_of("db.seed", "sql_paths") == CONFIG.splitlines().index(
        'sql_paths = ["./seeds/*.sql", "./seed.sql"]') + 1
    assert config.line_of("", "project_id") == 5


def test_it_is_frozen(tmp_path: Path) -> None:
    config = read_project_config(_project(tmp_path, CONFIG))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.project_id = "x"
    with pytest.raises(TypeError):
        config.raw["project_id"] = "x"


def test_no_file_and_an_empty_file_give_the_clis_defaults(tmp_path: Path) -> None:
    none = read_project_config(tmp_path)
    assert none == ProjectConfig() and none.path is None and none.supabase_dir is None
    assert none.api.schemas == ("public", "graphql_public")
    assert none.db.major_version is None  # only the file can say
    assert none.seed == SeedConfig(True, ("./seed.sql",))
    empty = read_project_config(_project(tmp_path, "# nothing yet\n"))
    assert (empty.api, empty.db, empty.seed) == (none.api, none.db, none.seed)


def test_dotted_keys_and_inline_tables_read_the_same(tmp_path: Path) -> None:
    config = parse_project_config('db.port = 6000\ndb.seed = { enabled = false }\n'
                                  'api = { schemas = ["api"] }\n')
    assert (config.db.port, config.seed.enabled, config.api.schemas) == (6000, False, ("api",))


def test_a_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    text = CONFIG.replace("[db.seed]\n", "[db.seed\n")
    line = text.splitlines().index("[db.seed") + 1
    with pytest.raises(ConfigError) as caught:
        read_project_config(_project(tmp_path, text))
    err = caught.value
    assert err.exit_code == 2
    assert err.message.startswith(f"{tmp_path}/supabase/config.toml:{line}:9: invalid TOML: "
                                  "Expected ']' at the end of a table declaration")
    assert (err.data["line"], err.data["column"], err.data["source_line"]) == (
        line, 9, "[db.seed")


def test_an_unterminated_string_at_the_end(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config.toml:2: invalid TOML: Unterminated string"):
        parse_project_config('project_id = "a"\nx = "abc')


@pytest.mark.parametrize(("text", "message"), [
    ('[db]\nport = "54322"\n', r"config.toml:2: \[db\] port must be a whole number, not '54322'"),
    ("[db]\nmajor_version = true\n", r":2: \[db\] major_version must be a whole number"),
    ('[db.seed]\nenabled = "no"\n', r":2: \[db.seed\] enabled must be true or false, not 'no'"),
    ('[db.seed]\nsql_paths = "./seed.sql"\n', r":2: \[db.seed\] sql_paths must be a list"),
    ("[api]\n\nschemas = [1, 2]\n", r":3: \[api\] schemas must be a list of strings"),
    ("project_id = 7\n", r"config.toml:1: project_id must be a string"),
    ("[db]\nseed = 3\n", r"config.toml:2: \[db.seed\] must be a table"),
])
def test_a_value_of_the_wrong_type_names_its_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_project_config(text)


def test_not_utf8_is_an_error_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "supabase").mkdir()
    (tmp_path / "supabase" / "config.toml").write_bytes(b'project_id = "a"\nx = "\xff"\n')
    with pytest.raises(ConfigError, match=r"config.toml:2: the file is not valid UTF-8"):
        read_project_config(tmp_path)
