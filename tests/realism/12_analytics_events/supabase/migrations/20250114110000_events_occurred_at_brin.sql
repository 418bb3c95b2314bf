-- Events are append-only in time order: a BRIN index is tiny and good enough for ranges.
create index if not exists events_occurred_at_brin
  on public.events using brin (occurred_at);

create index if not exists events_event_type_id_idx on public.events (event_type_id);
