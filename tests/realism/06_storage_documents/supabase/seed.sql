insert into auth.users (id, email, created_at)
values
  ('d1000000-0000-4000-8000-000000000001', 'rita@example.com', '2024-03-01 00:00:00+00'),
  ('d2000000-0000-4000-8000-000000000002', 'omar@example.com', '2024-03-01 00:00:00+00');

insert into public.teams (id, name)
values ('7ea70000-0000-4000-8000-000000000007', 'Design');

insert into public.team_members (team_id, user_id)
values ('7ea70000-0000-4000-8000-000000000007', 'd1000000-0000-4000-8000-000000000001');

-- Objects as the storage API would have written them.
insert into storage.objects (bucket_id, name, owner)
values
  ('documents', 'd1000000-0000-4000-8000-000000000001/contract.pdf', 'd1000000-0000-4000-8000-000000000001'),
  ('documents', 'd2000000-0000-4000-8000-000000000002/taxes/2023.pdf', 'd2000000-0000-4000-8000-000000000002'),
  ('team-assets', '7ea70000-0000-4000-8000-000000000007/logo.svg', 'd1000000-0000-4000-8000-000000000001'),
  ('avatars', 'd2000000-0000-4000-8000-000000000002/me.png', 'd2000000-0000-4000-8000-000000000002');

insert into public.documents (owner_id, name, storage_path, size_bytes)
values
  ('d1000000-0000-4000-8000-000000000001', 'contract.pdf', 'd1000000-0000-4000-8000-000000000001/contract.pdf', 48213),
  ('d2000000-0000-4000-8000-000000000002', '2023.pdf', 'd2000000-0000-4000-8000-000000000002/taxes/2023.pdf', 120033);
