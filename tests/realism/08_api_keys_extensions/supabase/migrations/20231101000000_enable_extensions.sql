-- Extensions live in their own schema on Supabase, never in public.
create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists pgcrypto with schema extensions;
