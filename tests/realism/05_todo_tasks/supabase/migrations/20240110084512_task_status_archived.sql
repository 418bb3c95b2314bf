alter type public.task_status add value if not exists 'archived';
