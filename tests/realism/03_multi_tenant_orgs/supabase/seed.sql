-- Two tenants with one member each.
insert into auth.users (id, email, raw_app_meta_data, created_at)
values
  ('a0000000-0000-4000-8000-000000000001', 'owner@acme.test',
   '{"provider": "email", "org_id": "0a000000-0000-4000-8000-0000000000a1"}', '2024-04-01 08:00:00+00'),
  ('b0000000-0000-4000-8000-000000000002', 'owner@globex.test',
   '{"provider": "email", "org_id": "0b000000-0000-4000-8000-0000000000b2"}', '2024-04-01 08:05:00+00');

insert into public.organizations (id, name, slug)
values
  ('0a000000-0000-4000-8000-0000000000a1', 'Acme', 'acme'),
  ('0b000000-0000-4000-8000-0000000000b2', 'Globex', 'globex');

insert into public.organization_members (org_id, user_id, role)
values
  ('0a000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-000000000001', 'owner'),
  ('0b000000-0000-4000-8000-0000000000b2', 'b0000000-0000-4000-8000-000000000002', 'owner');

insert into public.projects (org_id, name, created_by)
values
  ('0a000000-0000-4000-8000-0000000000a1', 'Rocket skates', 'a0000000-0000-4000-8000-000000000001'),
  ('0a000000-0000-4000-8000-0000000000a1', 'Giant magnet', 'a0000000-0000-4000-8000-000000000001'),
  ('0b000000-0000-4000-8000-0000000000b2', 'Doomsday device', 'b0000000-0000-4000-8000-000000000002');
