-- Metadata for uploaded documents; the file itself lives in storage.
create table public.documents (
  id uuid primary key default gen_random_uuid(),
  owner_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  name text not null,
  storage_path text not null unique,
  size_bytes bigint check (size_bytes >= 0),
  created_at timestamptz not null default now()
);

comment on column public.documents.storage_path is 'Object name in the documents bucket, "<owner_id>/<file>".';

alter table public.documents enable row level security;

create policy "Owners manage their documents"
  on public.documents
  for all
  to authenticated
  using ( owner_id = (select auth.uid()) )
  with check (
    owner_id = (select auth.uid())
    and (storage.foldername(storage_path))[1] = (select auth.uid()::text)
  );

create index documents_owner_id_idx on public.documents (owner_id);
