/**
 * REALTIME SUBSCRIPTIONS
 * Only allow realtime listening on public tables.
 */
alter publication supabase_realtime add table public.products;
alter publication supabase_realtime add table public.prices;
