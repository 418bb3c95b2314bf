-- The events table is large and written all the time: build without blocking writes.
create index concurrently if not exists events_properties_gin_idx
  on public.events
  using gin (properties jsonb_path_ops);
