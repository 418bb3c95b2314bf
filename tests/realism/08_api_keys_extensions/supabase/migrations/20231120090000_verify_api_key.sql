-- Edge functions verify a presented key with the service role.

create or replace function public.verify_api_key(presented_key text)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner uuid;
begin
  update public.api_keys
     set last_used_at = now()
   where key_hash = extensions.digest(presented_key, 'sha256')
     and revoked_at is null
  returning user_id into owner;

  return owner;
end;
$$;

comment on function public.verify_api_key(text) is
  'Returns the owner of a valid, unrevoked key (and touches last_used_at), else null.';

revoke all on function public.verify_api_key(text) from public;
revoke all on function public.verify_api_key(text) from anon, authenticated;
grant execute on function public.verify_api_key(text) to service_role;
