begin;
create extension if not exists pgtap with schema extensions;

select plan(7);

select fk_ok('public', 'orders', 'status_id', 'public', 'order_statuses', 'id');
select ok(
  (select convalidated from pg_constraint where conname = 'orders_status_id_fkey'),
  'the NOT VALID foreign key was validated'
);
select has_index('public', 'order_items', 'order_items_product_id_idx', 'index built concurrently');
select ok(
  (select indisvalid from pg_index where indexrelid = 'public.order_items_product_id_idx'::regclass),
  'the concurrently built index is valid'
);
select results_eq(
  $$ select id::int, code from public.order_statuses order by id $$,
  $$ values (1, 'pending'), (2, 'paid'), (3, 'shipped'), (4, 'delivered'), (5, 'cancelled') $$,
  'lookup ids are 1..5'
);
select is((select total_cents from public.orders where id = 1001), 5400::bigint,
          'the trigger keeps total_cents current');
select throws_ok(
  $$ insert into public.orders (customer_id, status_id)
     values ('e5000000-0000-4000-8000-0000000000e5', 42) $$,
  '23503', null,
  'unknown status ids are rejected'
);

select * from finish();
rollback;
