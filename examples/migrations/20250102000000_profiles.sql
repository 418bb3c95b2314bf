-- Profiles with an updated_at trigger maintained by a function.
create table public.profiles (
  id uuid primary key,
  username text unique not null,
  nickname text,
  updated_at timestamptz not null default now()
);

create or replace function public.touch_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

create trigger profiles_touch before update on public.profiles
  for each row execute function public.touch_updated_at();

alter table public.profiles enable row level security;
create policy profiles_read_all on public.profiles for select using (true);
