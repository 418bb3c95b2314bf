insert into public.categories (slug, name)
values ('coffee', 'Coffee'), ('gear', 'Gear');

insert into public.products (category_id, sku, name, price_cents)
values
  (1, 'COF-ETH-250', 'Ethiopia Guji 250 g', 1450),
  (1, 'COF-COL-250', 'Colombia Huila 250 g', 1290),
  (2, 'GEAR-V60', 'Pour-over dripper', 2500);

insert into auth.users (id, email, created_at)
values ('e5000000-0000-4000-8000-0000000000e5', 'buyer@example.com', '2024-08-01 00:00:00+00');

insert into public.orders (id, customer_id, status_id, placed_at)
overriding system value
values (1001, 'e5000000-0000-4000-8000-0000000000e5', 2, '2024-08-02 10:00:00+00');

insert into public.order_items (order_id, product_id, quantity, unit_price_cents)
values (1001, 1, 2, 1450), (1001, 3, 1, 2500);
