-- Stock per warehouse for the dashboard.
create or replace view public.stock_by_warehouse
  with (security_invoker = on)
as
select
  w.code as warehouse_code,
  w.name as warehouse_name,
  count(i.id) as item_count,
  coalesce(sum(i.quantity), 0) as total_quantity
from public.warehouses w
left join public.inventory_items i on i.warehouse_id = w.id
group by w.id, w.code, w.name;

comment on view public.stock_by_warehouse is 'Per-warehouse totals; RLS of inventory_items applies (security_invoker).';

revoke all on public.stock_by_warehouse from anon;
grant select on public.stock_by_warehouse to authenticated;
