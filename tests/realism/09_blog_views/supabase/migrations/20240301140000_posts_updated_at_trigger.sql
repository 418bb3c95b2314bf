-- updated_at, maintained by the database rather than by each client.

create or replace function public.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

create trigger posts_touch_updated_at
before update on public.posts
for each row
when (old.* is distinct from new.*)
execute function public.touch_updated_at();
