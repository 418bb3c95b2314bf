-- Tenant isolation.
-- Reading the claim straight from auth.jwt() keeps the policies free of joins.

-- organizations ---------------------------------------------------------------
create policy "Members read their active organization"
  on public.organizations for select
  to authenticated
  using ( id = (auth.jwt() ->> 'org_id')::uuid );

create policy "Admins rename their organization"
  on public.organizations for update
  to authenticated
  using ( public.is_org_admin(id) )
  with check ( public.is_org_admin(id) );

-- organization_members --------------------------------------------------------
create policy "Members see who else is in the organization"
  on public.organization_members for select
  to authenticated
  using ( org_id = (auth.jwt() ->> 'org_id')::uuid );

create policy "Admins manage memberships"
  on public.organization_members for all
  to authenticated
  using ( public.is_org_admin(org_id) )
  with check ( public.is_org_admin(org_id) );

-- projects --------------------------------------------------------------------
create policy "Tenant members can read projects"
  on public.projects for select
  to authenticated
  using ( org_id = (select auth.jwt() ->> 'org_id')::uuid );

create policy "Tenant members can create projects"
  on public.projects for insert
  to authenticated
  with check ( org_id = (select auth.jwt() ->> 'org_id')::uuid );

create policy "Tenant members can update projects"
  on public.projects for update
  to authenticated
  using ( org_id = (select auth.jwt() ->> 'org_id')::uuid );

-- project_tasks ---------------------------------------------------------------
create policy "Tenant members work on tasks"
  on public.project_tasks for all
  to authenticated
  using ( org_id = (select public.requesting_org_id()) )
  with check ( org_id = (select public.requesting_org_id()) );
