-- A boolean is not enough any more: tasks can be in progress.
create type public.task_status as enum ('todo', 'in_progress', 'done');

alter table public.tasks
  add column status public.task_status not null default 'todo';

-- Backfill from the old flag.
update public.tasks
   set status = 'done'
 where is_complete;

comment on column public.tasks.status is 'Replaces is_complete (dropped in a later migration).';
