-- Order statuses as a lookup table (not an enum: support wants to add some themselves).

create table public.order_statuses (
  id smallint generated always as identity primary key,
  code text not null unique,
  label text not null,
  is_final boolean not null default false
);

insert into public.order_statuses (code, label, is_final)
values
  ('pending',   'Awaiting payment', false),
  ('paid',      'Paid',             false),
  ('shipped',   'Shipped',          false),
  ('delivered', 'Delivered',        true),
  ('cancelled', 'Cancelled',        true);

alter table public.order_statuses enable row level security;
create policy "Statuses are readable" on public.order_statuses for select using (true);

comment on table public.order_statuses is 'Lookup: ids 1-5 are referenced by the app, never renumber them.';
