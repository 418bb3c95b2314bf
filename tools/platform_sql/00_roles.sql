-- dbsage Supabase-shaped platform, part 0: the roles (cluster-wide).
--
-- Run by tools/platform.py as a superuser, inside the one install transaction. Every run
-- creates the roles that are missing and brings all of them to the attributes, settings and
-- memberships they have on the Supabase platform (facts from supabase/postgres
-- migrations/db), so running it again, or in a second database of the same cluster,
-- changes nothing. A password (custom setting dbsage.platform_password, set by the caller
-- for this transaction only) is given to the LOGIN roles this run creates; existing roles
-- keep theirs.

do $roles$
declare
  pw text := nullif(current_setting('dbsage.platform_password', true), '');
  r record;
begin
  for r in
    select * from (values
      -- the cluster superuser (initdb's user on the platform)
      ('supabase_admin',             'superuser inherit createdb createrole replication bypassrls login', true),
      -- the developer's role: owner of the database, NOT a superuser
      ('postgres',                   'nosuperuser inherit createdb createrole replication bypassrls login', true),
      -- the API roles PostgREST switches to
      ('anon',                       'nosuperuser inherit nocreatedb nocreaterole nologin noreplication nobypassrls', false),
      ('authenticated',              'nosuperuser inherit nocreatedb nocreaterole nologin noreplication nobypassrls', false),
      ('service_role',               'nosuperuser inherit nocreatedb nocreaterole nologin noreplication bypassrls', false),
      ('authenticator',              'nosuperuser noinherit nocreatedb nocreaterole login noreplication nobypassrls', true),
      -- the service owners (GoTrue, Storage API, Realtime) and the dashboard
      ('supabase_auth_admin',        'nosuperuser noinherit nocreatedb createrole login noreplication nobypassrls', true),
      ('supabase_storage_admin',     'nosuperuser noinherit nocreatedb createrole login noreplication nobypassrls', true),
      ('supabase_realtime_admin',    'nosuperuser noinherit nocreatedb nocreaterole nologin noreplication nobypassrls', false),
      ('dashboard_user',             'nosuperuser inherit createdb createrole nologin replication nobypassrls', false),
      ('supabase_replication_admin', 'nosuperuser inherit nocreatedb nocreaterole login replication nobypassrls', true),
      ('supabase_read_only_user',    'nosuperuser inherit nocreatedb nocreaterole login noreplication bypassrls', true)
    ) as spec(name, attrs, can_login)
  loop
    if not exists (select from pg_catalog.pg_roles where rolname = r.name) then
      begin
        execute format('create role %I', r.name);
        if r.can_login and pw is not null then
          execute format('alter role %I password %L', r.name, pw);
        end if;
      exception when duplicate_object or unique_violation then
        null;  -- another install in this cluster created it first
      end;
    end if;
    execute format('alter role %I with %s', r.name, r.attrs);
  end loop;
end
$roles$;

-- Per-role settings, as the platform sets them.
alter role supabase_admin set search_path to "$user", public, auth, extensions;
alter role postgres set search_path to "$user", public, extensions;
alter role supabase_auth_admin set search_path to auth;
alter role supabase_auth_admin set idle_in_transaction_session_timeout to 60000;
alter role supabase_storage_admin set search_path to storage;
alter role anon set statement_timeout to '3s';
alter role authenticated set statement_timeout to '8s';
alter role authenticator set statement_timeout to '8s';
alter role authenticator set lock_timeout to '8s';

-- Memberships. postgres may act as the API roles and as the service owners: that is how,
-- without being a superuser, it creates triggers on auth.users and policies on
-- storage.objects / realtime.messages.
grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;
grant supabase_auth_admin, supabase_storage_admin, supabase_realtime_admin to postgres;
grant authenticator to supabase_storage_admin;
grant pg_monitor, pg_read_all_data, pg_signal_backend to postgres;
grant pg_read_all_data to supabase_read_only_user;
