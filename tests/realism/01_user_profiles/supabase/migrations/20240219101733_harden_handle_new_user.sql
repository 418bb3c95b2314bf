-- Security advisor: "Function Search Path Mutable" (lint 0011).
-- A SECURITY DEFINER function must not resolve names through the caller's search_path,
-- so pin it to '' and qualify every name in the body.

create or replace function public.handle_new_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.profiles (id, username, full_name, avatar_url)
  values (
    new.id,
    new.raw_user_meta_data ->> 'user_name',
    coalesce(new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'name'),
    new.raw_user_meta_data ->> 'avatar_url'
  );
  return new;
end;
$$;

-- Only the trigger calls it; nobody should call it through the API.
revoke execute on function public.handle_new_user() from public, anon, authenticated;

comment on function public.handle_new_user() is
  'Creates the public.profiles row for a new auth.users row (trigger on_auth_user_created).';
