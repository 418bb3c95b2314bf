-- Lists are per user, newest first; reminders look at due_at.
create index if not exists tasks_user_id_inserted_at_idx on public.tasks (user_id, inserted_at desc);

alter table public.tasks add column due_at timestamptz;

create index if not exists tasks_due_at_idx on public.tasks (due_at) where due_at is not null;
