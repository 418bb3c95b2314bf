-- Send new messages and channels to subscribed clients over Realtime.
alter publication supabase_realtime add table public.channels, public.messages;

-- Deletes and updates should carry the old row too.
alter table public.messages replica identity full;
alter table public.channels replica identity full;
