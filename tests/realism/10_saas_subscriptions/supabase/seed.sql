insert into public.products (id, active, name, description, metadata)
values
  ('prod_hobby', true, 'Hobby', 'For side projects', '{"tier": 1}'),
  ('prod_pro', true, 'Pro', 'For teams', '{"tier": 2}');

insert into public.prices (id, product_id, active, unit_amount, currency, type, interval, interval_count)
values
  ('price_hobby_month', 'prod_hobby', true, 500, 'usd', 'recurring', 'month', 1),
  ('price_pro_month', 'prod_pro', true, 2500, 'usd', 'recurring', 'month', 1),
  ('price_pro_year', 'prod_pro', true, 25000, 'usd', 'recurring', 'year', 1);

insert into auth.users (id, email, created_at)
values ('5ab50000-0000-4000-8000-00000000005a', 'payer@example.com', '2023-10-21 00:00:00+00');

insert into public.customers (id, stripe_customer_id)
values ('5ab50000-0000-4000-8000-00000000005a', 'cus_local');

insert into public.subscriptions (id, user_id, status, price_id, quantity, cancel_at_period_end,
                                  created, current_period_start, current_period_end)
values ('sub_local', '5ab50000-0000-4000-8000-00000000005a', 'active', 'price_pro_year', 1, false,
        '2023-10-21 00:00:00+00', '2023-10-21 00:00:00+00', '2999-10-21 00:00:00+00');
