-- Helpers used by the RLS policies.

-- The active organization from the JWT, or null when the claim is missing.
create or replace function public.requesting_org_id()
returns uuid
language sql
stable
set search_path = ''
as $$
  select nullif(auth.jwt() ->> 'org_id', '')::uuid
$$;

-- Is the current user an admin (or owner) of the given organization?
-- SECURITY DEFINER so the policy on organization_members can call it without recursing
-- into its own policy.
create or replace function public.is_org_admin(target_org uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select 1
      from public.organization_members m
     where m.org_id = target_org
       and m.user_id = auth.uid()
       and m.role in ('owner', 'admin')
  )
$$;

revoke execute on function public.is_org_admin(uuid) from public;
revoke execute on function public.is_org_admin(uuid) from anon;
grant execute on function public.is_org_admin(uuid) to authenticated, service_role;
