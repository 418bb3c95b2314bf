-- dbsage Supabase-shaped platform, part 4: the realtime schema (Supabase Realtime).
--
-- Only what migrations touch: realtime.messages (Broadcast/Presence authorization policies
-- are written on it), realtime.topic() for those policies, and realtime.send() for
-- broadcasts from triggers. No Realtime server runs here: nothing reads the
-- supabase_realtime publication, no daily partitions of realtime.messages are created (so
-- realtime.send() only raises a WARNING, as upstream does when an insert fails), and the
-- Postgres-Changes machinery (realtime.subscription, apply_rls, ...) is not provided.

create schema if not exists realtime authorization supabase_admin;
grant usage on schema realtime to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema realtime
  grant all on tables to postgres, dashboard_user;
alter default privileges for role supabase_admin in schema realtime
  grant all on sequences to postgres, dashboard_user;
alter default privileges for role supabase_admin in schema realtime
  grant all on functions to postgres, dashboard_user;

create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp not null default now(),
  inserted_at timestamp not null default now(),
  id uuid not null default gen_random_uuid(),
  binary_payload bytea,
  constraint messages_pkey primary key (id, inserted_at)
) partition by range (inserted_at);
do $chk$
begin
  if not exists (select from pg_catalog.pg_constraint
                 where conrelid = 'realtime.messages'::regclass and conname = 'messages_payload_exclusive') then
    alter table realtime.messages add constraint messages_payload_exclusive
      check (payload is null or binary_payload is null) not valid;
  end if;
end
$chk$;
create index if not exists messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
  where extension = 'broadcast' and private is true;
alter table realtime.messages enable row level security;
alter table realtime.messages owner to supabase_realtime_admin;
grant select, insert, update on realtime.messages to postgres, anon, authenticated, service_role;

-- The channel topic a Realtime authorization check runs for.
create or replace function realtime.topic() returns text
language sql stable as $fn$
  select nullif(current_setting('realtime.topic', true), '')::text
$fn$;

create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql as $fn$
begin
  begin
    perform set_config('realtime.topic', topic, true);
    insert into realtime.messages (payload, event, topic, private, extension)
    values (payload, event, topic, private, 'broadcast');
  exception when others then
    raise warning 'realtime.send could not store the broadcast: %', sqlerrm;
  end;
end
$fn$;

alter function realtime.topic() owner to supabase_realtime_admin;
alter function realtime.send(jsonb, text, text, boolean) owner to supabase_realtime_admin;
grant execute on function realtime.topic(), realtime.send(jsonb, text, text, boolean)
  to postgres, anon, authenticated, service_role;
