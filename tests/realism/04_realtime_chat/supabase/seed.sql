insert into auth.users (id, email, raw_user_meta_data, created_at)
values
  ('8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e', 'supabot@example.com', '{"name": "supabot"}',
   '2023-07-22 09:00:00+00'),
  ('b8a3f5a0-0c2e-4ab7-9f5e-8d7c6b5a4f31', 'mod@example.com', '{"name": "mod"}',
   '2023-07-22 09:10:00+00');

insert into public.users (id, username, status)
values
  ('8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e', 'supabot', 'ONLINE'),
  ('b8a3f5a0-0c2e-4ab7-9f5e-8d7c6b5a4f31', 'mod', 'AWAY');

insert into public.user_roles (user_id, role)
values ('b8a3f5a0-0c2e-4ab7-9f5e-8d7c6b5a4f31', 'moderator');

insert into public.messages (message, channel_id, user_id)
select m.message, c.id, '8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e'
  from (values ('public', 'Hello World 👋'), ('random', 'Perfection is attained, not when there is nothing more to add, but when there is nothing left to take away.'))
       as m (slug, message)
  join public.channels c using (slug);
