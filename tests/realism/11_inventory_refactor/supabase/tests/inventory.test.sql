begin;
create extension if not exists pgtap with schema extensions;

select plan(7);

select has_table('public', 'inventory_items', 'items was renamed');
select hasnt_table('public', 'items', 'the old name is gone');
select has_column('public', 'inventory_items', 'quantity', 'qty was renamed to quantity');
select col_not_null('public', 'inventory_items', 'warehouse_id', 'warehouse_id is required');
select is(
  (select count(*)::int from public.inventory_items where warehouse_id is null),
  0,
  'every imported item got its warehouse'
);

set local role authenticated;
set local request.jwt.claims to '{"sub": "5ca1ab1e-0000-4000-8000-000000000001", "role": "authenticated", "app_metadata": {"role": "staff"}}';
select results_eq(
  $$ select warehouse_code, item_count::int, total_quantity::int
       from public.stock_by_warehouse order by warehouse_code $$,
  $$ values ('BER'::text, 2, 4600), ('HAM', 2, 5075), ('MUC', 1, 40) $$,
  'staff see the stock per warehouse'
);

set local request.jwt.claims to '{"sub": "5ca1ab1e-0000-4000-8000-000000000002", "role": "authenticated", "app_metadata": {}}';
select is(
  (select sum(item_count)::int from public.stock_by_warehouse),
  0,
  'non-staff see no items through the security_invoker view'
);

select * from finish();
rollback;
