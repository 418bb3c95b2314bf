-- orders.status_id had no foreign key. Adding it NOT VALID takes only a brief lock
-- and checks new rows; existing rows are checked by VALIDATE in the next migration.
alter table public.orders
  add constraint orders_status_id_fkey
  foreign key (status_id) references public.order_statuses (id)
  not valid;
