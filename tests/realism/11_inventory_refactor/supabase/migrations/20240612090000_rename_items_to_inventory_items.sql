-- Naming: "items" clashed with order items in the API. Rename the table and tidy up.
alter table public.items rename to inventory_items;
alter table public.inventory_items rename column qty to quantity;

alter table public.inventory_items rename constraint items_pkey to inventory_items_pkey;
alter table public.inventory_items rename constraint items_sku_key to inventory_items_sku_key;
alter table public.inventory_items rename constraint items_qty_check to inventory_items_quantity_check;
alter table public.inventory_items rename constraint items_warehouse_id_fkey to inventory_items_warehouse_id_fkey;
alter index public.items_warehouse_idx rename to inventory_items_warehouse_idx;
alter sequence public.items_id_seq rename to inventory_items_id_seq;
