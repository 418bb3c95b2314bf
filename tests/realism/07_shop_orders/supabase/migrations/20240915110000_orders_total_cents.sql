-- Denormalised order total for the order list.
alter table public.orders add column total_cents bigint not null default 0;

-- Backfill existing orders.
update public.orders o
   set total_cents = t.total
  from (select order_id, sum(quantity * unit_price_cents)::bigint as total
          from public.order_items
         group by order_id) t
 where t.order_id = o.id;

create or replace function public.refresh_order_total()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  target bigint := coalesce(new.order_id, old.order_id);
begin
  update public.orders
     set total_cents = coalesce((select sum(quantity * unit_price_cents)
                                   from public.order_items
                                  where order_id = target), 0)
   where id = target;
  return null;
end;
$$;

create trigger order_items_refresh_total
  after insert or update or delete on public.order_items
  for each row execute function public.refresh_order_total();
