insert into auth.users (id, email, created_at)
values ('e7e70000-0000-4000-8000-0000000000e7', 'analyst@example.com', '2025-01-01 00:00:00+00');

insert into public.events (event_type_id, user_id, anonymous_id, properties, occurred_at)
values
  (1, null, 'anon-1', '{"path": "/"}', '2025-01-10 08:00:00+00'),
  (1, null, 'anon-1', '{"path": "/pricing"}', '2025-01-10 08:01:00+00'),
  (2, 'e7e70000-0000-4000-8000-0000000000e7', null, '{}', '2025-01-10 08:05:00+00'),
  (1, 'e7e70000-0000-4000-8000-0000000000e7', null, '{"path": "/app"}', '2025-01-11 09:00:00+00'),
  (6, 'e7e70000-0000-4000-8000-0000000000e7', null, '{"feature": "export"}', '2025-01-11 09:30:00+00');
