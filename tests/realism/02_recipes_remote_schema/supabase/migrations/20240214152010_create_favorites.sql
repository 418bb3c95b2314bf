-- Users can bookmark recipes.
create table public.favorites (
  user_id uuid not null references auth.users (id) on delete cascade,
  recipe_id uuid not null references public.recipes (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (user_id, recipe_id)
);

alter table public.favorites enable row level security;

-- Wrap auth.uid() in a select so it is evaluated once per statement.
create policy "Users can see their favorites"
  on public.favorites for select
  to authenticated
  using ( (select auth.uid()) = user_id );

create policy "Users can add favorites"
  on public.favorites for insert
  to authenticated
  with check ( (select auth.uid()) = user_id );

create policy "Users can remove favorites"
  on public.favorites for delete
  to authenticated
  using ( (select auth.uid()) = user_id );

create index favorites_recipe_id_idx on public.favorites (recipe_id);
