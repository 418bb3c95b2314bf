-- Teams share the team-assets bucket; the first folder is the team id.

create table public.teams (
  id uuid primary key default gen_random_uuid(),
  name text not null
);

create table public.team_members (
  team_id uuid not null references public.teams (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  primary key (team_id, user_id)
);

alter table public.teams enable row level security;
alter table public.team_members enable row level security;

-- Teams the current user belongs to. SECURITY DEFINER so storage policies can use it
-- without granting select on team_members to everyone.
create or replace function public.user_team_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select team_id from public.team_members where user_id = auth.uid()
$$;

revoke execute on function public.user_team_ids() from public, anon;
grant execute on function public.user_team_ids() to authenticated;

create policy "Members see their teams" on public.teams
  for select to authenticated
  using ( id in (select public.user_team_ids()) );

create policy "Members see their team's members" on public.team_members
  for select to authenticated
  using ( team_id in (select public.user_team_ids()) );

create policy "Team members can read team assets"
on storage.objects for select
to authenticated
using (
  bucket_id = 'team-assets'
  and ((storage.foldername(name))[1])::uuid in (select public.user_team_ids())
);

create policy "Team members can upload team assets"
on storage.objects for insert
to authenticated
with check (
  bucket_id = 'team-assets'
  and ((storage.foldername(name))[1])::uuid in (select public.user_team_ids())
);
