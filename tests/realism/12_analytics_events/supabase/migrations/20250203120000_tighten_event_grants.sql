-- Least privilege: clients only ever insert events.
-- Run with a short lock timeout so a busy table makes the migration fail fast
-- instead of queueing every writer behind it.

begin;

set local lock_timeout = '5s';

revoke select, update, delete, truncate, references, trigger on table public.events from anon, authenticated;
revoke insert, update, delete, truncate, references, trigger on table public.event_types from anon, authenticated;

grant select, insert on table public.events to service_role;
grant select on table public.event_types to anon, authenticated, service_role;

-- Sessions for funnels.
alter table public.events add column session_id uuid;
comment on column public.events.session_id is 'Client session; null for server-side events.';

commit;
