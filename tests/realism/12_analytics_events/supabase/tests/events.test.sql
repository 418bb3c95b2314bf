begin;
create extension if not exists pgtap with schema extensions;

select plan(7);

select has_index('public', 'events', 'events_properties_gin_idx', 'the GIN index exists');
select function_privs_are('public', 'daily_event_counts', array['date', 'date'], 'anon', array[]::text[],
                          'anon cannot call daily_event_counts');
select table_privs_are('public', 'events', 'anon', array['INSERT'], 'anon may only insert events');

set local role anon;
select lives_ok(
  $$ insert into public.events (event_type_id, anonymous_id) values (1, 'anon-2') $$,
  'an anonymous visitor records a page view'
);
select throws_ok($$ select * from public.events $$, '42501', null, 'anon cannot read events');
reset role;

set local role authenticated;
set local request.jwt.claims to '{"sub": "e7e70000-0000-4000-8000-0000000000e7", "role": "authenticated"}';
select results_eq(
  $$ select day, event_name, event_count::int from public.daily_event_counts('2025-01-10', '2025-01-11') $$,
  $$ values ('2025-01-10'::date, 'page_view'::text, 2), ('2025-01-10', 'sign_up', 1),
            ('2025-01-11', 'feature_used', 1), ('2025-01-11', 'page_view', 1) $$,
  'daily counts for signed-in users'
);
reset role;

set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select is((select count(*)::int from public.events where anonymous_id = 'anon-2'), 1,
          'the service role reads raw events');

select * from finish();
rollback;
