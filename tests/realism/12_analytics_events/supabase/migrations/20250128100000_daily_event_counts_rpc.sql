-- Dashboard RPC: daily counts per event type.
-- SECURITY DEFINER because clients cannot read events; it only returns aggregates.

create or replace function public.daily_event_counts(since date, until date default null)
returns table (day date, event_name text, event_count bigint)
language sql
stable
security definer
set search_path = ''
as $$
  select (e.occurred_at at time zone 'UTC')::date as day,
         t.name as event_name,
         count(*) as event_count
    from public.events e
    join public.event_types t on t.id = e.event_type_id
   where e.occurred_at >= since::timestamp at time zone 'UTC'
     and (until is null or e.occurred_at < (until + 1)::timestamp at time zone 'UTC')
   group by 1, 2
   order by 1, 2
$$;

comment on function public.daily_event_counts(date, date) is 'Aggregates only; safe to expose to signed-in users.';

revoke execute on function public.daily_event_counts(date, date) from public;
revoke execute on function public.daily_event_counts(date, date) from anon;
grant execute on function public.daily_event_counts(date, date) to authenticated;
grant execute on function public.daily_event_counts(date, date) to service_role;
