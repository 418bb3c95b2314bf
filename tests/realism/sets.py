"""The realism fixture suite: Supabase-shaped migration sets as real projects have them.

Each folder ``tests/realism/<NN_name>/`` is a project root holding ``supabase/migrations/``
(``<14-digit UTC timestamp>_<name>.sql`` files), optionally ``supabase/seed.sql`` and pgTAP
files under ``supabase/tests/``. Every set applies, file by file in version order, to a fresh
Supabase-shaped database as the non-superuser ``postgres`` role; the seed runs after the last
migration, the pgTAP files after the seed.

``SETS`` lists them with what each is expected to leave in the catalog, so that any test
(psql vs dbsage apply, rollback properties, ...) can iterate over them::

    from realism import SETS

    for s in SETS:
        for path in s.migrations:
            subprocess.run(psql_command(url, path), check=True)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parent
VERSION_RE = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")

# What the SQL of a file does, told from its statements: comments, string literals and
# dollar-quoted function bodies are blanked out first (see statements_only).
_DOLLAR_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|)\$.*?\$\1\$", re.S)
_NOISE_RE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'", re.S)
_CONCURRENTLY_RE = re.compile(r"^\s*create\s+(unique\s+)?index\s+concurrently\b", re.I | re.M)
_NOT_VALID_RE = re.compile(r"\bforeign\s+key\b[^;]*\bnot\s+valid\s*;", re.I | re.S)
_VALIDATE_RE = re.compile(r"\bvalidate\s+constraint\b", re.I)
_BEGIN_RE = re.compile(r"^\s*begin\s*;", re.I | re.M)
_COMMIT_RE = re.compile(r"^\s*commit\s*;", re.I | re.M)
_DUMP_HEADER = (
    "SET statement_timeout = 0;",
    "SET lock_timeout = 0;",
    "SELECT pg_catalog.set_config('search_path', '', false);",
)
_INSERT_RE = re.compile(r"^\s*insert\s+into\s+", re.I | re.M)


def statements_only(text: str) -> str:
    """The SQL without function bodies, comments and string literals (each becomes a space)."""
    text = _DOLLAR_RE.sub(" ", text)
    return _NOISE_RE.sub(" ", text)


def _sql(path: Path) -> str:
    return statements_only(path.read_text())


def uses_concurrently(path: Path) -> bool:
    """The file builds an index CONCURRENTLY (so it cannot run inside a transaction)."""
    return bool(_CONCURRENTLY_RE.search(_sql(path)))


def adds_not_valid_fk(path: Path) -> bool:
    return bool(_NOT_VALID_RE.search(_sql(path)))


def validates_constraint(path: Path) -> bool:
    return bool(_VALIDATE_RE.search(_sql(path)))


def has_explicit_transaction(path: Path) -> bool:
    """The file wraps its own body in ``begin; ... commit;``."""
    text = _sql(path)
    return bool(_BEGIN_RE.search(text) and _COMMIT_RE.search(text))


def has_dump_header(path: Path) -> bool:
    """The file starts like ``supabase db dump`` / pg_dump output."""
    head = path.read_text()[:1000]
    return all(line in head for line in _DUMP_HEADER)


def inserts_rows(path: Path) -> bool:
    """A top-level INSERT (not one inside a function body)."""
    return bool(_INSERT_RE.search(_sql(path)))


def psql_command(url: str, path: Path) -> list[str]:
    """How the suite applies one file with psql: stop at the first error, in one transaction
    unless the file builds an index concurrently (which a transaction block refuses)."""
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    if not uses_concurrently(path):
        cmd.append("--single-transaction")
    return [*cmd, "-d", url, "-f", str(path)]


@dataclass(frozen=True)
class Expect:
    """What a set leaves behind; names are schema-qualified."""

    covers: tuple[str, ...]
    # Tables that exist after the last migration, each with RLS enabled.
    rls_tables: tuple[str, ...]
    # (table, policy name) pairs that exist after the last migration.
    policies: tuple[tuple[str, str], ...] = ()
    # Functions (schema.name) that are SECURITY DEFINER with a pinned search_path.
    definer_functions: tuple[str, ...] = ()
    # enum type -> its labels in order.
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Views created with security_invoker.
    invoker_views: tuple[str, ...] = ()
    # Tables in the supabase_realtime publication.
    realtime_tables: tuple[str, ...] = ()
    # storage.buckets ids -> public flag.
    buckets: Mapping[str, bool] = field(default_factory=dict)
    # Relations that must not exist (renamed or dropped).
    absent: tuple[str, ...] = ()
    # Row counts after the migrations alone, then after the seed as well.
    migration_rows: Mapping[str, int] = field(default_factory=dict)
    seeded_rows: Mapping[str, int] = field(default_factory=dict)
    # Extensions the set creates or relies on (besides plpgsql).
    extensions: tuple[str, ...] = ()
    # Triggers as (table, trigger name).
    triggers: tuple[tuple[str, str], ...] = ()
    # Constraints (table, name) that must exist and be validated.
    validated_constraints: tuple[tuple[str, str], ...] = ()
    # Indexes (schema.name) that must exist and be valid.
    indexes: tuple[str, ...] = ()
    # The declared shape of the files, checked against their text.
    has_concurrently_file: bool = False
    has_not_valid_fk: bool = False
    has_explicit_transaction: bool = False
    has_dump_header: bool = False
    inserts_rows: bool = False


@dataclass(frozen=True)
class RealismSet:
    name: str
    root: Path  # the project root: holds supabase/
    migrations: tuple[Path, ...]  # in version order
    seed: Path | None
    tests: tuple[Path, ...]  # pgTAP files
    expect: Expect

    @property
    def supabase_dir(self) -> Path:
        return self.root / "supabase"

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(p.name[:14] for p in self.migrations)

    @property
    def concurrent_migrations(self) -> tuple[Path, ...]:
        return tuple(p for p in self.migrations if uses_concurrently(p))

    # The declared flags, for tests that only want to filter the sets.
    @property
    def has_concurrently_file(self) -> bool:
        return self.expect.has_concurrently_file

    @property
    def has_not_valid_fk(self) -> bool:
        return self.expect.has_not_valid_fk

    @property
    def inserts_rows(self) -> bool:
        return self.expect.inserts_rows

    @property
    def has_explicit_transaction(self) -> bool:
        return self.expect.has_explicit_transaction


def _frozen(d: Mapping[str, object]) -> Mapping:  # type: ignore[type-arg]
    return MappingProxyType(dict(d))


EXPECT: Mapping[str, Expect] = _frozen({
    "01_user_profiles": Expect(
        covers=("handle_new_user trigger on auth.users (security definer, search_path '')",
                "RLS with auth.uid() unwrapped, then rewritten wrapped (select auth.uid())",
                "storage bucket + storage.objects policies with storage.foldername",
                "updated_at trigger", "revoke execute", "comments"),
        rls_tables=("public.profiles",),
        policies=(
            ("public.profiles", "Public profiles are viewable by everyone."),
            ("public.profiles", "Users can insert their own profile."),
            ("public.profiles", "Users can update own profile."),
            ("storage.objects", "Avatar images are publicly accessible."),
            ("storage.objects", "Users can upload an avatar into their own folder."),
            ("storage.objects", "Users can update their own avatar."),
            ("storage.objects", "Users can delete their own avatar."),
        ),
        definer_functions=("public.handle_new_user",),
        buckets={"avatars": True},
        triggers=(("auth.users", "on_auth_user_created"), ("public.profiles", "on_profiles_updated")),
        indexes=("public.profiles_username_idx",),
        migration_rows={"public.profiles": 0, "storage.buckets": 1},
        # The trigger made one profile per seeded auth user.
        seeded_rows={"public.profiles": 2, "auth.users": 2},
        inserts_rows=True,
    ),
    "02_recipes_remote_schema": Expect(
        covers=("supabase db dump initial schema (pg_dump header, quoted identifiers, RESET ALL)",
                "extensions uuid-ossp/pgcrypto/pg_trgm with schema extensions",
                "extensions.uuid_generate_v4() default", "identity added by ALTER COLUMN",
                "enum, later alter type ... add value after", "grants, alter default privileges",
                "RLS unwrapped (dump) and wrapped (later)", "GIN trigram index", "comments"),
        rls_tables=("public.ingredients", "public.recipes", "public.recipe_ingredients", "public.favorites"),
        policies=(
            ("public.recipes", "Public recipes are readable, own recipes too"),
            ("public.recipes", "Authors can insert recipes"),
            ("public.recipe_ingredients", "Recipe ingredients follow their recipe"),
            ("public.favorites", "Users can see their favorites"),
        ),
        enums={"public.recipe_difficulty": ("easy", "medium", "hard", "expert")},
        triggers=(("public.recipes", "recipes_set_updated_at"),),
        indexes=("public.recipes_title_trgm_idx", "public.favorites_recipe_id_idx"),
        extensions=("uuid-ossp", "pgcrypto", "pg_trgm"),
        migration_rows={"public.recipes": 0},
        seeded_rows={"public.ingredients": 6, "public.recipes": 2, "public.recipe_ingredients": 5},
        has_dump_header=True,
    ),
    "03_multi_tenant_orgs": Expect(
        covers=("multi-tenant RLS on the JWT claim auth.jwt() ->> 'org_id'",
                "security definer helpers with search_path ''", "grant/revoke execute",
                "pgcrypto gen_random_bytes default", "gen_random_uuid()", "enum",
                "audit trigger", "revoke on a table from anon/authenticated"),
        rls_tables=("public.organizations", "public.organization_members", "public.projects",
                    "public.project_tasks", "public.invitations", "public.audit_log"),
        policies=(
            ("public.organizations", "Members read their active organization"),
            ("public.projects", "Tenant members can read projects"),
            ("public.projects", "Tenant members can create projects"),
            ("public.project_tasks", "Tenant members work on tasks"),
            ("public.invitations", "Admins see and create invitations"),
            ("public.audit_log", "Tenant members read their audit log"),
        ),
        definer_functions=("public.is_org_admin", "public.accept_invitation", "public.audit_project_change"),
        enums={"public.org_role": ("owner", "admin", "member")},
        triggers=(("public.projects", "projects_audit"),),
        extensions=("pgcrypto",),
        seeded_rows={"public.organizations": 2, "public.projects": 3, "public.audit_log": 3},
    ),
    "04_realtime_chat": Expect(
        covers=("alter publication supabase_realtime add table", "replica identity full",
                "enum, later add value before", "auth.role() in policies",
                "lookup rows with identity ids (role_permissions 1..3)",
                "data migration inserting into auth.users and public tables",
                "security definer authorize() with search_path ''", "revoke/grant to service_role",
                "comments"),
        rls_tables=("public.users", "public.channels", "public.messages", "public.user_roles",
                    "public.role_permissions"),
        policies=(
            ("public.messages", "Allow logged-in read access"),
            ("public.messages", "Allow authorized delete access"),
            ("public.channels", "Allow authorized delete access"),
            ("public.user_roles", "Allow individual read access"),
        ),
        definer_functions=("public.authorize",),
        enums={"public.user_status": ("ONLINE", "AWAY", "OFFLINE"),
               "public.app_role": ("admin", "moderator")},
        realtime_tables=("public.channels", "public.messages"),
        migration_rows={"public.channels": 2, "public.role_permissions": 3, "public.users": 1,
                        "public.messages": 0},
        seeded_rows={"public.users": 3, "public.messages": 2, "public.user_roles": 1},
        inserts_rows=True,
    ),
    "05_todo_tasks": Expect(
        covers=("rename table todos -> tasks, column, constraints, sequence, policies",
                "enum then alter type add value", "update backfill from a boolean",
                "drop column", "unqualified names as in the Supabase todo example",
                "RLS unwrapped auth.uid()", "partial index"),
        rls_tables=("public.tasks",),
        policies=(
            ("public.tasks", "Individuals can create tasks."),
            ("public.tasks", "Individuals can view their own tasks."),
            ("public.tasks", "Individuals can update their own tasks."),
            ("public.tasks", "Individuals can delete their own tasks."),
        ),
        enums={"public.task_status": ("todo", "in_progress", "done", "archived")},
        absent=("public.todos", "public.todos_id_seq"),
        indexes=("public.tasks_user_id_inserted_at_idx", "public.tasks_due_at_idx"),
        seeded_rows={"public.tasks": 3},
    ),
    "06_storage_documents": Expect(
        covers=("storage.buckets inserts (private and public)",
                "storage.objects policies on storage.foldername(name) with (select auth.uid())",
                "team folders through a security definer setof function",
                "gen_random_uuid()", "default auth.uid()"),
        rls_tables=("public.documents", "public.teams", "public.team_members"),
        policies=(
            ("storage.objects", "Users can read their own documents"),
            ("storage.objects", "Users can upload documents to their folder"),
            ("storage.objects", "Users can replace their own documents"),
            ("storage.objects", "Users can delete their own documents"),
            ("storage.objects", "Team members can read team assets"),
            ("storage.objects", "Team members can upload team assets"),
            ("storage.objects", "Avatar images are publicly accessible"),
            ("storage.objects", "Users upload their avatar"),
            ("public.documents", "Owners manage their documents"),
        ),
        definer_functions=("public.user_team_ids",),
        buckets={"documents": False, "team-assets": False, "avatars": True},
        migration_rows={"storage.buckets": 3, "storage.objects": 0},
        seeded_rows={"storage.objects": 4, "public.documents": 2},
        inserts_rows=True,
    ),
    "07_shop_orders": Expect(
        covers=("foreign key added NOT VALID, validated in the next file",
                "create index concurrently alone in its own file",
                "lookup rows with generated-always identity ids",
                "update backfill of a new column", "security definer trigger function"),
        rls_tables=("public.categories", "public.products", "public.order_statuses", "public.orders",
                    "public.order_items"),
        policies=(
            ("public.products", "Active products are public"),
            ("public.orders", "Customers see their orders"),
            ("public.order_items", "Customers add items to pending orders"),
        ),
        definer_functions=("public.refresh_order_total",),
        triggers=(("public.order_items", "order_items_refresh_total"),),
        validated_constraints=(("public.orders", "orders_status_id_fkey"),),
        indexes=("public.order_items_product_id_idx", "public.orders_customer_id_idx"),
        migration_rows={"public.order_statuses": 5, "public.orders": 0},
        seeded_rows={"public.products": 3, "public.orders": 1, "public.order_items": 2},
        has_concurrently_file=True,
        has_not_valid_fk=True,
        inserts_rows=True,
    ),
    "08_api_keys_extensions": Expect(
        covers=('create extension if not exists "uuid-ossp" with schema extensions', "pgcrypto",
                "extensions.uuid_generate_v4()", "gen_random_uuid()",
                "extensions.digest / gen_random_bytes / hmac",
                "security definer functions, execute revoked from public/anon/authenticated",
                "grant execute to service_role", "comments"),
        rls_tables=("public.api_keys", "public.webhook_endpoints"),
        policies=(
            ("public.api_keys", "Users list their API keys"),
            ("public.api_keys", "Users revoke their API keys"),
            ("public.webhook_endpoints", "Users manage their webhook endpoints"),
        ),
        definer_functions=("public.create_api_key", "public.sign_webhook_payload",
                           "public.verify_api_key"),
        extensions=("uuid-ossp", "pgcrypto"),
        seeded_rows={"public.api_keys": 1, "public.webhook_endpoints": 1},
    ),
    "09_blog_views": Expect(
        covers=("view with (security_invoker = true), replaced by create or replace view",
                "comments on table/column/view/policy", "updated_at trigger with a when clause",
                "lookup rows (tags) with identity ids", "partial index"),
        rls_tables=("public.posts", "public.comments", "public.tags", "public.post_tags"),
        policies=(
            ("public.posts", "Published posts are public"),
            ("public.posts", "Authors write their posts"),
            ("public.comments", "Signed-in users comment"),
            ("public.post_tags", "Authors tag their posts"),
        ),
        invoker_views=("public.published_posts",),
        triggers=(("public.posts", "posts_touch_updated_at"),),
        indexes=("public.posts_published_at_idx", "public.comments_post_id_idx"),
        migration_rows={"public.tags": 4, "public.posts": 0},
        seeded_rows={"public.posts": 2, "public.comments": 1, "public.post_tags": 2},
        inserts_rows=True,
    ),
    "10_saas_subscriptions": Expect(
        covers=("a file with its own begin; ... commit;", "enums, later add value",
                "alter publication supabase_realtime add table (two statements)",
                "revoke all from anon/authenticated, grant to service_role",
                "auth.role() = 'service_role' policy", "RLS with (select auth.uid())",
                "security definer function with a default argument"),
        rls_tables=("public.customers", "public.products", "public.prices", "public.subscriptions"),
        policies=(
            ("public.products", "Allow public read-only access."),
            ("public.prices", "Allow public read-only access."),
            ("public.subscriptions", "Can only view own subs data."),
            ("public.subscriptions", "Service role manages subscriptions"),
        ),
        definer_functions=("public.has_active_subscription",),
        enums={"public.pricing_type": ("one_time", "recurring"),
               "public.pricing_plan_interval": ("day", "week", "month", "year"),
               "public.subscription_status": ("trialing", "active", "canceled", "incomplete",
                                              "incomplete_expired", "past_due", "unpaid", "paused")},
        realtime_tables=("public.products", "public.prices"),
        seeded_rows={"public.products": 2, "public.prices": 3, "public.subscriptions": 1},
        has_explicit_transaction=True,
    ),
    "11_inventory_refactor": Expect(
        covers=("rename table items -> inventory_items, column qty -> quantity, constraints, index, "
                "sequence", "data import in a migration", "lookup rows with explicit identity ids + setval",
                "add column, update backfill, set not null", "drop column",
                "view with (security_invoker = on)", "RLS on app_metadata in auth.jwt()"),
        rls_tables=("public.inventory_items", "public.warehouses"),
        policies=(
            ("public.inventory_items", "Staff read items"),
            ("public.inventory_items", "Staff write items"),
            ("public.warehouses", "Everyone signed in reads warehouses"),
        ),
        invoker_views=("public.stock_by_warehouse",),
        absent=("public.items", "public.items_id_seq", "public.items_warehouse_idx"),
        indexes=("public.inventory_items_warehouse_id_idx",),
        migration_rows={"public.inventory_items": 5, "public.warehouses": 3},
        inserts_rows=True,
    ),
    "12_analytics_events": Expect(
        covers=("create index concurrently (GIN) alone in its file", "BRIN index",
                "lookup rows with generated-always identity ids", "begin; set local lock_timeout; commit;",
                "security definer RPC, execute revoked from public and anon",
                "column-level privilege tightening (revoke from anon/authenticated)",
                "policies for anon and for auth.role()", "comments"),
        rls_tables=("public.events", "public.event_types"),
        policies=(
            ("public.events", "Visitors record anonymous events"),
            ("public.events", "Users record their own events"),
            ("public.events", "Backend reads events"),
        ),
        definer_functions=("public.daily_event_counts",),
        indexes=("public.events_properties_gin_idx", "public.events_occurred_at_brin"),
        migration_rows={"public.event_types": 6, "public.events": 0},
        seeded_rows={"public.events": 5},
        has_concurrently_file=True,
        has_explicit_transaction=True,
        inserts_rows=True,
    ),
})


def _load(folder: Path) -> RealismSet:
    supa = folder / "supabase"
    migrations = tuple(sorted((supa / "migrations").glob("*.sql")))
    seed = supa / "seed.sql"
    tests = tuple(sorted((supa / "tests").glob("*.sql"))) if (supa / "tests").is_dir() else ()
    return RealismSet(
        name=folder.name,
        root=folder,
        migrations=migrations,
        seed=seed if seed.is_file() else None,
        tests=tests,
        expect=EXPECT[folder.name],
    )


SET_DIRS: tuple[Path, ...] = tuple(sorted(p for p in ROOT.iterdir() if (p / "supabase").is_dir()))
SETS: list[RealismSet] = [_load(p) for p in SET_DIRS if p.name in EXPECT]
