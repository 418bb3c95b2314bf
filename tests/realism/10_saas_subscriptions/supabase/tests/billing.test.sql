begin;
create extension if not exists pgtap with schema extensions;

select plan(7);

select enum_has_labels('public', 'subscription_status', array[
  'trialing', 'active', 'canceled', 'incomplete', 'incomplete_expired', 'past_due', 'unpaid', 'paused'
]);
select table_privs_are('public', 'customers', 'anon', array[]::text[], 'anon has no rights on customers');
select table_privs_are('public', 'customers', 'authenticated', array[]::text[],
                       'authenticated has no rights on customers');
select set_eq(
  $$ select tablename::text from pg_publication_tables where pubname = 'supabase_realtime' $$,
  array['products', 'prices'],
  'products and prices are in the realtime publication'
);

set local role authenticated;
set local request.jwt.claims to '{"sub": "5ab50000-0000-4000-8000-00000000005a", "role": "authenticated"}';
select ok(public.has_active_subscription(), 'the seeded payer is subscribed');
select throws_ok($$ select * from public.customers $$, '42501', null, 'customers are not readable');
select throws_ok(
  $$ update public.prices set unit_amount = 1 $$,
  '42501', null,
  'clients cannot change prices'
);

select * from finish();
rollback;
