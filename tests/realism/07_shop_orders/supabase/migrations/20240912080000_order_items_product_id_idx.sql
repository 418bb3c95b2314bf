-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block: keep it alone in its file.
create index concurrently if not exists order_items_product_id_idx
  on public.order_items (product_id);
