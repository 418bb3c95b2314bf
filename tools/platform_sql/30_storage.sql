-- dbsage Supabase-shaped platform, part 3: the storage schema (Supabase Storage).
--
-- buckets and objects (and the S3 multipart tables) as the Storage API's tenant migrations
-- leave them (supabase/storage migrations/tenant/, applied in order and read back; the
-- analytics/iceberg/vector bucket tables are left out), the helper functions policies use,
-- and the triggers that guard the tables. No Storage API runs here: no files are stored,
-- storage.migrations is left empty, and the API's search/list functions are not provided.

create schema if not exists storage authorization supabase_admin;
grant usage on schema storage to postgres, anon, authenticated, service_role;
grant all on schema storage to postgres, supabase_storage_admin, dashboard_user;

alter default privileges for role postgres in schema storage
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema storage
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema storage
  grant all on sequences to postgres, anon, authenticated, service_role;

-- Everything below is owned by supabase_storage_admin, as when the Storage API creates it.
set local role supabase_storage_admin;

do $types$
begin
  if not exists (select from pg_catalog.pg_type
                 where typnamespace = 'storage'::regnamespace and typname = 'buckettype') then
    create type storage.buckettype as enum ('STANDARD', 'ANALYTICS', 'VECTOR');
  end if;
end
$types$;

create table if not exists storage.migrations (
  id integer not null,
  name varchar(100) not null,
  hash varchar(40) not null,
  executed_at timestamp default current_timestamp,
  constraint migrations_pkey primary key (id),
  constraint migrations_name_key unique (name)
);

create table if not exists storage.buckets (
  id text not null,
  name text not null,
  owner uuid,  -- deprecated upstream in favour of owner_id
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  "public" boolean default false,
  avif_autodetection boolean default false,
  file_size_limit bigint,
  allowed_mime_types text[],
  owner_id text,
  type storage.buckettype not null default 'STANDARD',
  versioning_status text not null default 'DISABLED',
  constraint buckets_pkey primary key (id),
  constraint buckets_versioning_status_check
    check (versioning_status in ('DISABLED', 'ENABLED', 'SUSPENDED')),
  constraint buckets_versioning_standard_only_check
    check (type = 'STANDARD' or versioning_status = 'DISABLED'),
  constraint buckets_versioning_dark_check check (versioning_status = 'DISABLED')
);
create unique index if not exists bname on storage.buckets (name);

create table if not exists storage.objects (
  id uuid not null default gen_random_uuid(),
  bucket_id text,
  name text,
  owner uuid,  -- deprecated upstream in favour of owner_id
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  last_accessed_at timestamptz default now(),
  metadata jsonb,
  path_tokens text[] generated always as (string_to_array(name, '/')) stored,
  version text,
  owner_id text,
  user_metadata jsonb,
  archived_at timestamptz,
  is_delete_marker boolean not null default false,
  is_versioned boolean not null default false,
  constraint objects_pkey primary key (id),
  constraint "objects_bucketId_fkey" foreign key (bucket_id) references storage.buckets (id)
);
create unique index if not exists bucketid_objname on storage.objects (bucket_id, name);
create index if not exists idx_objects_bucket_id_name on storage.objects (bucket_id, name collate "C");
create index if not exists idx_objects_bucket_id_name_lower on storage.objects (bucket_id, lower(name) collate "C");
create index if not exists name_prefix_search on storage.objects (name text_pattern_ops);

create table if not exists storage.s3_multipart_uploads (
  id text not null,
  in_progress_size bigint not null default 0,
  upload_signature text not null,
  bucket_id text not null,
  key text collate "C" not null,
  version text not null,
  owner_id text,
  created_at timestamptz not null default now(),
  user_metadata jsonb,
  metadata jsonb,
  constraint s3_multipart_uploads_pkey primary key (id),
  constraint s3_multipart_uploads_bucket_id_fkey foreign key (bucket_id) references storage.buckets (id)
);
create index if not exists idx_multipart_uploads_list on storage.s3_multipart_uploads (bucket_id, key, created_at);

create table if not exists storage.s3_multipart_uploads_parts (
  id uuid not null default gen_random_uuid(),
  upload_id text not null,
  size bigint not null default 0,
  part_number integer not null,
  bucket_id text not null,
  key text collate "C" not null,
  etag text not null,
  owner_id text,
  version text not null,
  created_at timestamptz not null default now(),
  constraint s3_multipart_uploads_parts_pkey primary key (id),
  constraint s3_multipart_uploads_parts_upload_id_fkey foreign key (upload_id)
    references storage.s3_multipart_uploads (id) on delete cascade,
  constraint s3_multipart_uploads_parts_bucket_id_fkey foreign key (bucket_id) references storage.buckets (id)
);

-- Path helpers for policies: for 'a/b/c.png', foldername gives {a,b}, filename 'c.png',
-- extension 'png' (the text after the last dot of the file name; the whole name when it has
-- no dot), exactly as upstream computes them.
create or replace function storage.foldername(name text) returns text[]
language plpgsql immutable as $fn$
declare
  parts text[] := string_to_array(name, '/');
begin
  return parts[1 : array_length(parts, 1) - 1];
end
$fn$;

create or replace function storage.filename(name text) returns text
language plpgsql immutable as $fn$
declare
  parts text[] := string_to_array(name, '/');
begin
  return parts[array_length(parts, 1)];
end
$fn$;

create or replace function storage.extension(name text) returns text
language plpgsql immutable as $fn$
declare
  parts text[] := string_to_array(name, '/');
  file_part text := parts[array_length(parts, 1)];
begin
  return reverse(split_part(reverse(file_part), '.', 1));
end
$fn$;

-- The Storage API names the operation a request performs in storage.operation.
create or replace function storage.operation() returns text
language plpgsql stable as $fn$
begin
  return current_setting('storage.operation', true);
end
$fn$;

create or replace function storage.get_size_by_bucket() returns table (size bigint, bucket_id text)
language plpgsql stable as $fn$
begin
  return query
    select sum((o.metadata ->> 'size')::bigint)::bigint, o.bucket_id
    from storage.objects as o
    group by o.bucket_id;
end
$fn$;

create or replace function storage.update_updated_at_column() returns trigger
language plpgsql as $fn$
begin
  new.updated_at := now();
  return new;
end
$fn$;

create or replace function storage.enforce_bucket_name_length() returns trigger
language plpgsql as $fn$
begin
  if length(new.name) > 100 then
    raise exception 'bucket name "%" is % characters long; at most 100 are allowed',
      new.name, length(new.name);
  end if;
  return new;
end
$fn$;

-- On the platform a DELETE on buckets/objects would orphan the stored files, so it is
-- refused unless the session sets storage.allow_delete_query to 'true' (the Storage API
-- does). Same here.
create or replace function storage.protect_delete() returns trigger
language plpgsql as $fn$
begin
  if coalesce(current_setting('storage.allow_delete_query', true), 'false') <> 'true' then
    raise exception 'deleting rows from storage.% directly is not allowed; use the Storage API', tg_table_name
      using errcode = '42501',
            hint = 'Set storage.allow_delete_query = ''true'' in the session to override.';
  end if;
  return null;
end
$fn$;

create or replace trigger enforce_bucket_name_length_trigger
  before insert or update of name on storage.buckets
  for each row execute function storage.enforce_bucket_name_length();
create or replace trigger protect_buckets_delete
  before delete on storage.buckets
  for each statement execute function storage.protect_delete();
create or replace trigger protect_objects_delete
  before delete on storage.objects
  for each statement execute function storage.protect_delete();
create or replace trigger update_objects_updated_at
  before update on storage.objects
  for each row execute function storage.update_updated_at_column();

alter table storage.migrations enable row level security;
alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
alter table storage.s3_multipart_uploads enable row level security;
alter table storage.s3_multipart_uploads_parts enable row level security;

reset role;

grant all on storage.buckets, storage.objects to anon, authenticated, service_role;
grant all on storage.buckets, storage.objects to postgres with grant option;
grant all on storage.migrations to postgres, anon, authenticated, service_role;
grant all on storage.s3_multipart_uploads, storage.s3_multipart_uploads_parts to service_role;
grant select on storage.s3_multipart_uploads, storage.s3_multipart_uploads_parts to anon, authenticated;
grant all on all sequences in schema storage to postgres, dashboard_user;
grant all on all routines in schema storage to postgres, dashboard_user;
grant all on function storage.foldername(text), storage.filename(text), storage.extension(text)
  to anon, authenticated, service_role;
