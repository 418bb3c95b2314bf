-- warehouse (text) is replaced by warehouse_id; its index goes with it.
drop index if exists public.inventory_items_warehouse_idx;
alter table public.inventory_items drop column warehouse;

create index inventory_items_warehouse_id_idx on public.inventory_items (warehouse_id);
