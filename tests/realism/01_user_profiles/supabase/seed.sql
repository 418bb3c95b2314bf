-- Local development users. The on_auth_user_created trigger creates their profiles.
insert into auth.users (id, email, raw_app_meta_data, raw_user_meta_data, created_at)
values
  ('4a1c0b6e-2f0d-4c49-9a55-2b1d0c3e7f01', 'ada@example.com',
   '{"provider": "email", "providers": ["email"]}',
   '{"user_name": "ada", "full_name": "Ada Lovelace"}',
   '2024-01-02 09:00:00+00'),
  ('8d7e3f52-91b4-4a7e-b0c2-6f3a2e1d9c02', 'alan@example.com',
   '{"provider": "github", "providers": ["github"]}',
   '{"user_name": "alan", "name": "Alan Turing", "avatar_url": "https://example.com/alan.png"}',
   '2024-01-03 10:30:00+00');

update public.profiles
   set website = 'https://example.com/ada'
 where id = '4a1c0b6e-2f0d-4c49-9a55-2b1d0c3e7f01';
