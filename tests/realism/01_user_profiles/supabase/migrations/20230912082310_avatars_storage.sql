-- Set up Storage!
-- Avatars live under a folder named after the owner's user id: "<uid>/avatar.png".
insert into storage.buckets (id, name, public)
  values ('avatars', 'avatars', true);

-- Set up access controls for storage.
-- See https://supabase.com/docs/guides/storage/security/access-control for more details.
create policy "Avatar images are publicly accessible." on storage.objects
  for select using (bucket_id = 'avatars');

create policy "Users can upload an avatar into their own folder." on storage.objects
  for insert to authenticated
  with check (
    bucket_id = 'avatars'
    and (storage.foldername(name))[1] = auth.uid()::text
  );

create policy "Users can update their own avatar." on storage.objects
  for update to authenticated
  using ( auth.uid() = owner )
  with check (bucket_id = 'avatars');

create policy "Users can delete their own avatar." on storage.objects
  for delete to authenticated
  using (
    bucket_id = 'avatars'
    and (storage.foldername(name))[1] = auth.uid()::text
  );
