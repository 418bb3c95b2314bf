-- Billing schema, mirrored from Stripe by webhooks (service role only writes here).
-- Written by hand as one transaction so that a half-applied schema never reaches prod.

begin;

/**
* CUSTOMERS
* Private: maps users to Stripe customers. No policies, so no client access.
*/
create table public.customers (
  -- UUID from auth.users
  id uuid references auth.users not null primary key,
  -- The user's customer ID in Stripe. User must not be able to update this.
  stripe_customer_id text
);
alter table public.customers enable row level security;

/**
* PRODUCTS
* Products are created and managed in Stripe and synced to our DB via Stripe webhooks.
*/
create table public.products (
  -- Product ID from Stripe, e.g. prod_1234.
  id text primary key,
  active boolean,
  name text,
  description text,
  image text,
  metadata jsonb
);
alter table public.products enable row level security;

/**
* PRICES
*/
create type public.pricing_type as enum ('one_time', 'recurring');
create type public.pricing_plan_interval as enum ('day', 'week', 'month', 'year');

create table public.prices (
  -- Price ID from Stripe, e.g. price_1234.
  id text primary key,
  product_id text references public.products,
  active boolean,
  description text,
  unit_amount bigint,
  currency text check (char_length(currency) = 3),
  type public.pricing_type,
  interval public.pricing_plan_interval,
  interval_count integer,
  trial_period_days integer,
  metadata jsonb
);
alter table public.prices enable row level security;

/**
* SUBSCRIPTIONS
*/
create type public.subscription_status as enum (
  'trialing', 'active', 'canceled', 'incomplete', 'incomplete_expired', 'past_due', 'unpaid'
);

create table public.subscriptions (
  -- Subscription ID from Stripe, e.g. sub_1234.
  id text primary key,
  user_id uuid references auth.users not null,
  status public.subscription_status,
  metadata jsonb,
  price_id text references public.prices,
  quantity integer,
  cancel_at_period_end boolean,
  created timestamp with time zone default timezone('utc'::text, now()) not null,
  current_period_start timestamp with time zone default timezone('utc'::text, now()) not null,
  current_period_end timestamp with time zone default timezone('utc'::text, now()) not null,
  ended_at timestamp with time zone,
  cancel_at timestamp with time zone,
  canceled_at timestamp with time zone,
  trial_start timestamp with time zone,
  trial_end timestamp with time zone
);
alter table public.subscriptions enable row level security;

commit;
