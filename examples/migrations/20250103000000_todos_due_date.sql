-- Adding a nullable column without a default is instant (no table rewrite).
alter table public.todos add column due_on date;
comment on column public.todos.due_on is 'Optional due date';
