-- Link items to warehouses: add the column, backfill it from the text, then enforce it.
alter table public.items add column warehouse_id smallint references public.warehouses (id);

update public.items i
   set warehouse_id = w.id
  from public.warehouses w
 where w.name = i.warehouse
   and i.warehouse_id is null;

alter table public.items alter column warehouse_id set not null;
