-- Used by the app and by policies of premium tables.
create or replace function public.has_active_subscription(uid uuid default auth.uid())
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select 1
      from public.subscriptions s
     where s.user_id = uid
       and s.status in ('trialing', 'active')
       and s.current_period_end > now()
  )
$$;

revoke execute on function public.has_active_subscription(uuid) from public, anon;
grant execute on function public.has_active_subscription(uuid) to authenticated, service_role;

comment on function public.has_active_subscription(uuid) is 'True while the user has a trialing or active subscription.';
