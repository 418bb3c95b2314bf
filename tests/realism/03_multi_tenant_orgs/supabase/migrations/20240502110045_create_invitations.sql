-- Invitations by e-mail with a random token.
create extension if not exists pgcrypto with schema extensions;

create table public.invitations (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  email text not null,
  role public.org_role not null default 'member',
  token text not null unique default encode(extensions.gen_random_bytes(18), 'hex'),
  invited_by uuid not null default auth.uid() references auth.users (id),
  accepted_at timestamptz,
  created_at timestamptz not null default now(),
  unique (org_id, email)
);

alter table public.invitations enable row level security;

create policy "Admins see and create invitations"
  on public.invitations for all
  to authenticated
  using ( (select public.is_org_admin(org_id)) )
  with check ( (select public.is_org_admin(org_id)) );

-- Accept an invitation: runs as the owner, checks the token and the caller's e-mail.
create or replace function public.accept_invitation(invite_token text)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  invite public.invitations%rowtype;
begin
  select * into invite
    from public.invitations
   where token = invite_token
     and accepted_at is null
     and lower(email) = lower(auth.jwt() ->> 'email');

  if not found then
    raise exception 'invitation not found' using errcode = 'P0002';
  end if;

  insert into public.organization_members (org_id, user_id, role)
  values (invite.org_id, auth.uid(), invite.role)
  on conflict (org_id, user_id) do nothing;

  update public.invitations set accepted_at = now() where id = invite.id;
  return invite.org_id;
end;
$$;

revoke execute on function public.accept_invitation(text) from public, anon;
grant execute on function public.accept_invitation(text) to authenticated;
