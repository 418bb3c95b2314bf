-- dbsage Supabase-shaped platform, part 1: this database, the public and extensions
-- schemas, the extensions migrations expect, the realtime publication.

-- The developer's role owns the database (so also the public schema, which belongs to
-- pg_database_owner since PostgreSQL 15).
do $db$
begin
  execute format('alter database %I owner to postgres', current_database());
  execute format('grant all on database %I to postgres, dashboard_user', current_database());
end
$db$;

grant usage on schema public to postgres, anon, authenticated, service_role;

-- Whatever postgres (the developer) or supabase_admin creates in public is usable by the
-- API roles: the platform's default privileges.
alter default privileges for role postgres in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;

-- The extensions schema belongs to postgres on the platform.
create schema if not exists extensions;
alter schema extensions owner to postgres;
grant usage on schema extensions to anon, authenticated, service_role;
grant all on schema extensions to dashboard_user;

-- PostgREST reloads its schema cache on NOTIFY pgrst; the platform sends it from these
-- event triggers after DDL and drops. (No PostgREST listens here; the notifications are
-- harmless, and the triggers are part of what a migration runs next to on the platform.)
create or replace function extensions.pgrst_ddl_watch() returns event_trigger
language plpgsql as $fn$
begin
  if exists (
    select from pg_catalog.pg_event_trigger_ddl_commands() as cmd
    where cmd.schema_name is distinct from 'pg_temp'
      and cmd.command_tag in (
        'CREATE SCHEMA', 'ALTER SCHEMA', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
        'ALTER TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'CREATE VIEW',
        'ALTER VIEW', 'CREATE MATERIALIZED VIEW', 'ALTER MATERIALIZED VIEW',
        'CREATE FUNCTION', 'ALTER FUNCTION', 'CREATE TRIGGER', 'CREATE TYPE', 'ALTER TYPE',
        'CREATE RULE', 'COMMENT')
  ) then
    notify pgrst, 'reload schema';
  end if;
end
$fn$;

create or replace function extensions.pgrst_drop_watch() returns event_trigger
language plpgsql as $fn$
begin
  if exists (
    select from pg_catalog.pg_event_trigger_dropped_objects() as obj
    where obj.is_temporary is false
      and obj.object_type in ('schema', 'table', 'foreign table', 'view', 'materialized view',
                              'function', 'trigger', 'type', 'rule')
  ) then
    notify pgrst, 'reload schema';
  end if;
end
$fn$;

do $evt$
begin
  if not exists (select from pg_catalog.pg_event_trigger where evtname = 'pgrst_ddl_watch') then
    create event trigger pgrst_ddl_watch on ddl_command_end
      execute function extensions.pgrst_ddl_watch();
  end if;
  if not exists (select from pg_catalog.pg_event_trigger where evtname = 'pgrst_drop_watch') then
    create event trigger pgrst_drop_watch on sql_drop
      execute function extensions.pgrst_drop_watch();
  end if;
end
$evt$;

-- uuid-ossp and pgcrypto live in the extensions schema, created by the developer's role as
-- on the platform (both are trusted extensions, so postgres may create and drop them
-- itself). On PostgreSQL 15 these are the real contrib modules; on the embedded 18 they are
-- dbsage's SQL stand-ins (platform_sql/extension/), found through extension_control_path.
set local role postgres;
create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists pgcrypto with schema extensions;
reset role;

grant all on all tables in schema extensions to postgres with grant option;
grant all on all routines in schema extensions to postgres with grant option;
grant all on all sequences in schema extensions to postgres with grant option;
grant all on all tables in schema extensions to dashboard_user;
grant all on all routines in schema extensions to dashboard_user;
grant all on all sequences in schema extensions to dashboard_user;
alter default privileges for role supabase_admin in schema extensions
  grant all on tables to postgres with grant option;
alter default privileges for role supabase_admin in schema extensions
  grant all on routines to postgres with grant option;
alter default privileges for role supabase_admin in schema extensions
  grant all on sequences to postgres with grant option;

-- Realtime's publication: empty, owned by postgres, so a migration may
-- `alter publication supabase_realtime add table ...` for tables it owns.
do $pub$
begin
  if not exists (select from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$pub$;
alter publication supabase_realtime owner to postgres;
