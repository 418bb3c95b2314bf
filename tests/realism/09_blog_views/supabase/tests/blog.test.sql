begin;
create extension if not exists pgtap with schema extensions;

select plan(6);

select has_view('public', 'published_posts', 'published_posts view exists');
select ok(
  (select 'security_invoker=true' = any (reloptions) from pg_class
    where oid = 'public.published_posts'::regclass),
  'published_posts is security_invoker'
);
select is(
  obj_description('public.posts'::regclass, 'pg_class'),
  'Blog posts. Draft while published_at is null.',
  'posts has its comment'
);

set local role anon;
select results_eq(
  $$ select slug, comment_count::int, tags from public.published_posts $$,
  $$ values ('hello-world'::text, 1, array['announcements', 'postgres']) $$,
  'anon sees the published post with its comments and tags'
);
select is_empty($$ select 1 from public.posts where slug = 'draft-roadmap' $$, 'drafts are hidden from anon');
reset role;

update public.posts set title = 'Hello, World!' where id = 1;
select isnt((select updated_at from public.posts where id = 1), '2024-01-15 09:00:00+00'::timestamptz,
            'updated_at moved on update');

select * from finish();
rollback;
