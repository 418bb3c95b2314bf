-- Buckets
--   documents: private, one folder per user  -> "<user id>/<file name>"
--   team-assets: private, one folder per team -> "<team id>/<anything>"
insert into storage.buckets (id, name, public)
values
  ('documents', 'documents', false),
  ('team-assets', 'team-assets', false)
on conflict (id) do nothing;
