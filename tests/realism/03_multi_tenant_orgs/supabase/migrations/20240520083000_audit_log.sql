-- Append-only audit trail of project changes, per organization.

create table public.audit_log (
  id bigint generated always as identity primary key,
  org_id uuid not null,
  actor uuid,
  table_name text not null,
  action text not null check (action in ('INSERT', 'UPDATE', 'DELETE')),
  row_id text not null,
  at timestamptz not null default now()
);

alter table public.audit_log enable row level security;

create policy "Tenant members read their audit log"
  on public.audit_log for select
  to authenticated
  using ( org_id = (select auth.jwt() ->> 'org_id')::uuid );

-- Clients never write the log themselves.
revoke insert, update, delete, truncate on public.audit_log from anon, authenticated;

create or replace function public.audit_project_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  r record;
begin
  r := coalesce(new, old);
  insert into public.audit_log (org_id, actor, table_name, action, row_id)
  values (r.org_id, auth.uid(), tg_table_name, tg_op, r.id::text);
  return r;
end;
$$;

create trigger projects_audit
  after insert or update or delete on public.projects
  for each row execute function public.audit_project_change();
