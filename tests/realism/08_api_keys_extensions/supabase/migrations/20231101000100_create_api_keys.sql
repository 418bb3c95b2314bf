-- Personal API keys. Only a SHA-256 hash of the key is stored; the key itself is
-- shown once, when it is created.

create table public.api_keys (
  id uuid primary key default extensions.uuid_generate_v4(),
  user_id uuid not null references auth.users (id) on delete cascade,
  name text not null,
  prefix text not null,                  -- first characters, shown in the dashboard
  key_hash bytea not null unique,
  last_used_at timestamptz,
  revoked_at timestamptz,
  created_at timestamptz not null default now()
);

alter table public.api_keys enable row level security;

create policy "Users list their API keys"
  on public.api_keys for select
  to authenticated
  using ( user_id = auth.uid() );

create policy "Users revoke their API keys"
  on public.api_keys for update
  to authenticated
  using ( user_id = auth.uid() )
  with check ( user_id = auth.uid() );

-- Keys are created through create_api_key() only.
revoke insert on public.api_keys from anon, authenticated;

create index api_keys_user_id_idx on public.api_keys (user_id);

-- Returns the new key in clear, once.
create or replace function public.create_api_key(key_name text)
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  new_key text := 'sk_' || encode(extensions.gen_random_bytes(24), 'hex');
begin
  if auth.uid() is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;

  insert into public.api_keys (user_id, name, prefix, key_hash)
  values (auth.uid(), key_name, left(new_key, 10), extensions.digest(new_key, 'sha256'));

  return new_key;
end;
$$;

revoke execute on function public.create_api_key(text) from public, anon;
grant execute on function public.create_api_key(text) to authenticated;
