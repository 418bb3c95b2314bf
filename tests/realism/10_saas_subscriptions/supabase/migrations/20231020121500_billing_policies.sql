create policy "Allow public read-only access." on public.products
  for select using (true);

create policy "Allow public read-only access." on public.prices
  for select using (true);

create policy "Can only view own subs data." on public.subscriptions
  for select using ( (select auth.uid()) = user_id );

-- Webhook handlers run with the service role key.
create policy "Service role manages subscriptions" on public.subscriptions
  for all
  using ( auth.role() = 'service_role' )
  with check ( auth.role() = 'service_role' );
