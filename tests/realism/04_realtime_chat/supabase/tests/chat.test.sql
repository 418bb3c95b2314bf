begin;
create extension if not exists pgtap with schema extensions;

select plan(6);

select enum_has_labels('public', 'user_status', array['ONLINE', 'AWAY', 'OFFLINE']);
select set_eq(
  $$ select tablename::text from pg_publication_tables
      where pubname = 'supabase_realtime' and schemaname = 'public' $$,
  array['channels', 'messages'],
  'channels and messages are published to Realtime'
);
select results_eq(
  $$ select id, role::text, permission::text from public.role_permissions order by id $$,
  $$ values (1::bigint, 'admin', 'channels.delete'), (2, 'admin', 'messages.delete'),
            (3, 'moderator', 'messages.delete') $$,
  'permission lookup rows got ids 1..3'
);

-- The moderator may delete someone else's message, not a channel.
set local role authenticated;
set local request.jwt.claims to '{"sub": "b8a3f5a0-0c2e-4ab7-9f5e-8d7c6b5a4f31", "role": "authenticated"}';

select ok(public.authorize('messages.delete'), 'moderators may delete messages');
select ok(not public.authorize('channels.delete'), 'moderators may not delete channels');
select results_eq(
  $$ with gone as (delete from public.messages returning 1) select count(*)::int from gone $$,
  array[2],
  'the moderator deleted both seeded messages'
);

select * from finish();
rollback;
