insert into auth.users (id, email, created_at)
values ('a9e10000-0000-4000-8000-0000000000a9', 'dev@example.com', '2023-11-01 00:00:00+00');

-- A known key for local testing: sk_local_development_only
insert into public.api_keys (id, user_id, name, prefix, key_hash, created_at)
values ('3f2e1d0c-9b8a-4765-8432-10fedcba9876', 'a9e10000-0000-4000-8000-0000000000a9', 'local',
        'sk_local_d', extensions.digest('sk_local_development_only', 'sha256'),
        '2023-11-01 00:00:00+00');

insert into public.webhook_endpoints (id, user_id, url, secret, events)
values ('6b5a4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d', 'a9e10000-0000-4000-8000-0000000000a9',
        'https://hooks.example.com/in', 'whsec_local', '{order.paid}');
