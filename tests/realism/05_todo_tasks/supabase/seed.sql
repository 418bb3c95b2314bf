insert into auth.users (id, email, created_at)
values ('f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b', 'sam@example.com', '2024-01-10 08:00:00+00');

insert into public.tasks (user_id, title, status, inserted_at)
values
  ('f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b', 'Buy oat milk', 'done', '2024-01-10 08:05:00+00'),
  ('f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b', 'Write the quarterly report', 'in_progress', '2024-01-10 08:06:00+00'),
  ('f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b', 'Book dentist', 'todo', '2024-01-10 08:07:00+00');
