-- Catalog: categories and products. Prices are in cents to avoid rounding.

create table public.categories (
  id bigint generated always as identity primary key,
  slug text not null unique,
  name text not null
);

create table public.products (
  id bigint generated always as identity primary key,
  category_id bigint references public.categories (id) on delete set null,
  sku text not null unique,
  name text not null,
  price_cents integer not null check (price_cents >= 0),
  active boolean not null default true,
  created_at timestamptz not null default now()
);

alter table public.categories enable row level security;
alter table public.products enable row level security;

-- The shop front is public.
create policy "Catalog is public" on public.categories for select to anon, authenticated using (true);
create policy "Active products are public" on public.products for select to anon, authenticated using (active);
