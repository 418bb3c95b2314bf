-- Keep profiles.updated_at current on every update.

create or replace function public.handle_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at = now();
  return new;
end;
$$;

create trigger on_profiles_updated
  before update on public.profiles
  for each row execute function public.handle_updated_at();

comment on function public.handle_updated_at() is 'Sets updated_at to now() on update.';
