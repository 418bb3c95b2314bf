-- All clients read status now (app release 2.4).
alter table public.tasks drop column if exists is_complete;
