-- Data migration: a system user owns the default channels.
-- The system user's auth row is created here too, so that the FK holds on a fresh project.

insert into auth.users (id, email, raw_app_meta_data, raw_user_meta_data, created_at)
values ('00000000-0000-4000-8000-00000000c0de', 'system@chat.invalid',
        '{"provider": "email"}', '{"name": "System"}', '2023-07-21 08:30:00+00')
on conflict (id) do nothing;

insert into public.users (id, username, status)
values ('00000000-0000-4000-8000-00000000c0de', 'system', 'OFFLINE')
on conflict (id) do nothing;

insert into public.channels (slug, created_by)
values
  ('public', '00000000-0000-4000-8000-00000000c0de'),
  ('random', '00000000-0000-4000-8000-00000000c0de');
