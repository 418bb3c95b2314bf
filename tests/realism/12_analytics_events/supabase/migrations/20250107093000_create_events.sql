-- Product analytics: clients (even anonymous ones) send events, only the backend reads them.

create table public.event_types (
  id integer generated always as identity primary key,
  name text not null unique,
  description text
);

create table public.events (
  id bigint generated always as identity primary key,
  event_type_id integer not null references public.event_types (id),
  user_id uuid references auth.users (id) on delete set null,
  anonymous_id text,
  properties jsonb not null default '{}'::jsonb,
  occurred_at timestamptz not null default now(),
  constraint events_actor_check check (user_id is not null or anonymous_id is not null)
);

comment on table public.events is 'Raw analytics events; write-only for clients.';
comment on column public.events.anonymous_id is 'Client-generated id for visitors who are not signed in.';

alter table public.event_types enable row level security;
alter table public.events enable row level security;

create policy "Event types are public" on public.event_types
  for select to anon, authenticated using (true);

create policy "Visitors record anonymous events" on public.events
  for insert to anon
  with check ( user_id is null and anonymous_id is not null );

create policy "Users record their own events" on public.events
  for insert to authenticated
  with check ( user_id = (select auth.uid()) );

create policy "Backend reads events" on public.events
  for select
  using ( (select auth.role()) = 'service_role' );
