-- customers must never be reachable from the API, not even by mistake in a future policy.
revoke all on table public.customers from anon, authenticated;
grant all on table public.customers to service_role;

-- Nor may clients write catalog data.
revoke insert, update, delete, truncate on table public.products, public.prices from anon, authenticated;
