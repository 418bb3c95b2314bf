-- VALIDATE CONSTRAINT takes SHARE UPDATE EXCLUSIVE on orders: reads and writes go on.
alter table public.orders validate constraint orders_status_id_fkey;
