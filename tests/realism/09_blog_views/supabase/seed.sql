insert into auth.users (id, email, raw_user_meta_data, created_at)
values ('b1060000-0000-4000-8000-0000000000b1', 'editor@example.com', '{"full_name": "Editor"}',
        '2024-01-01 00:00:00+00');

insert into public.posts (id, author_id, slug, title, body, published_at, created_at, updated_at)
overriding system value
values
  (1, 'b1060000-0000-4000-8000-0000000000b1', 'hello-world', 'Hello, world', 'First post.',
   '2024-01-16 09:00:00+00', '2024-01-15 09:00:00+00', '2024-01-15 09:00:00+00'),
  (2, 'b1060000-0000-4000-8000-0000000000b1', 'draft-roadmap', 'Roadmap (draft)', 'TBD',
   null, '2024-01-20 09:00:00+00', '2024-01-20 09:00:00+00');

select setval(pg_get_serial_sequence('public.posts', 'id'), 2);

insert into public.post_tags (post_id, tag_id)
select 1, id from public.tags where name in ('announcements', 'postgres');

insert into public.comments (post_id, author_id, body, created_at)
values (1, 'b1060000-0000-4000-8000-0000000000b1', 'Welcome!', '2024-01-16 10:00:00+00');
