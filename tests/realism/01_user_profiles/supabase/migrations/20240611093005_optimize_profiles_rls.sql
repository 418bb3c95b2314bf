-- Performance advisor: "Auth RLS Initialization Plan" (lint 0003).
-- Calling auth.uid() directly re-evaluates it for each row; wrapping it in a
-- sub-select lets the planner run it once per statement (an initPlan).

drop policy "Users can insert their own profile." on public.profiles;
drop policy "Users can update own profile." on public.profiles;

create policy "Users can insert their own profile." on public.profiles
  for insert
  to authenticated
  with check ( (select auth.uid()) = id );

create policy "Users can update own profile." on public.profiles
  for update
  to authenticated
  using ( (select auth.uid()) = id )
  with check ( (select auth.uid()) = id );

-- Profiles are read a lot by id and by username.
create index if not exists profiles_username_idx on public.profiles (username);
