-- Outgoing webhooks. gen_random_uuid() is built in (PostgreSQL 13+), no extension needed.
create table public.webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  url text not null check (url ~ '^https://'),
  -- Signing secret (HMAC-SHA256 of each payload, see sign_webhook_payload()).
  secret text not null default encode(extensions.gen_random_bytes(32), 'hex'),
  events text[] not null default '{}',
  enabled boolean not null default true,
  created_at timestamptz not null default now()
);

alter table public.webhook_endpoints enable row level security;

create policy "Users manage their webhook endpoints"
  on public.webhook_endpoints
  for all
  to authenticated
  using ( (select auth.uid()) = user_id )
  with check ( (select auth.uid()) = user_id );

create or replace function public.sign_webhook_payload(endpoint_id uuid, payload text)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select encode(extensions.hmac(payload, e.secret, 'sha256'), 'hex')
    from public.webhook_endpoints e
   where e.id = endpoint_id
$$;

revoke execute on function public.sign_webhook_payload(uuid, text) from public, anon, authenticated;
grant execute on function public.sign_webhook_payload(uuid, text) to service_role;
