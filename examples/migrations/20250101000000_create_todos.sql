-- Todos: one row per task, owned by a user. RLS keeps each user to their own rows.
create table public.todos (
  id bigint generated always as identity primary key,
  owner_id uuid not null,
  title text not null check (char_length(title) between 1 and 500),
  done boolean not null default false,
  created_at timestamptz not null default now()
);

create index todos_owner_id_idx on public.todos (owner_id);

alter table public.todos enable row level security;

-- Supabase sets request.jwt.claim.sub; plain PostgreSQL callers see nothing.
create policy todos_select_own on public.todos
  for select using (owner_id = nullif(current_setting('request.jwt.claim.sub', true), '')::uuid);

create policy todos_modify_own on public.todos
  for all using (owner_id = nullif(current_setting('request.jwt.claim.sub', true), '')::uuid)
  with check (owner_id = nullif(current_setting('request.jwt.claim.sub', true), '')::uuid);
