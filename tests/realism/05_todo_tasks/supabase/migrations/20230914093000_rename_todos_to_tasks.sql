-- The app calls them tasks now; follow suit in the database.
alter table public.todos rename to tasks;
alter table public.tasks rename column task to title;

-- Constraint and sequence names still say "todos".
alter table public.tasks rename constraint todos_pkey to tasks_pkey;
alter table public.tasks rename constraint todos_task_check to tasks_title_check;
alter table public.tasks rename constraint todos_user_id_fkey to tasks_user_id_fkey;
alter sequence public.todos_id_seq rename to tasks_id_seq;

-- Policy names too (and drop the stray trailing space).
alter policy "Individuals can create todos." on public.tasks rename to "Individuals can create tasks.";
alter policy "Individuals can view their own todos. " on public.tasks rename to "Individuals can view their own tasks.";
alter policy "Individuals can update their own todos." on public.tasks rename to "Individuals can update their own tasks.";
alter policy "Individuals can delete their own todos." on public.tasks rename to "Individuals can delete their own tasks.";
