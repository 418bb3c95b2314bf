-- CREATE INDEX CONCURRENTLY cannot run inside a transaction: dbsage runs a file made only of
-- such statements one by one, outside a transaction, and records each outcome.
create index concurrently if not exists todos_title_idx on public.todos (title);
