-- The same kind of application done right: no advisor lint fires (run as postgres on a
-- Supabase-shaped database: tests/supabase_shaped.py).
CREATE SCHEMA IF NOT EXISTS extensions;  -- Supabase has it
CREATE EXTENSION citext SCHEMA extensions;

-- public read, owner write; the foreign key is the primary key
CREATE TABLE public.profiles (
  id uuid PRIMARY KEY REFERENCES auth.users (id),
  username extensions.citext UNIQUE,
  avatar_url text
);
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
CREATE POLICY profiles_read ON public.profiles FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY profiles_insert ON public.profiles FOR INSERT TO authenticated
  WITH CHECK ((select auth.uid()) = id);
CREATE POLICY profiles_update ON public.profiles FOR UPDATE TO authenticated
  USING ((select auth.uid()) = id) WITH CHECK ((select auth.uid()) = id);

-- owner-only rows; the foreign key leads the primary key
CREATE TABLE public.todos (
  user_id uuid NOT NULL REFERENCES auth.users (id),
  id bigint GENERATED ALWAYS AS IDENTITY,
  title text NOT NULL,
  done boolean NOT NULL DEFAULT false,
  PRIMARY KEY (user_id, id)
);
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY todos_owner ON public.todos FOR ALL TO authenticated
  USING ((select auth.uid()) = user_id) WITH CHECK ((select auth.uid()) = user_id);

-- multi-tenant by a server-set claim
CREATE TABLE public.projects (
  tenant_id uuid NOT NULL,
  id bigint NOT NULL,
  name text,
  PRIMARY KEY (tenant_id, id)
);
ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY;
CREATE POLICY projects_tenant ON public.projects FOR ALL TO authenticated
  USING (tenant_id = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant_id')::uuid)
  WITH CHECK (tenant_id = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant_id')::uuid);

CREATE VIEW public.open_todos WITH (security_invoker = on) AS
  SELECT * FROM public.todos WHERE NOT done;

CREATE FUNCTION public.todo_count() RETURNS bigint LANGUAGE sql STABLE
  SET search_path = '' AS $$ SELECT count(*) FROM public.todos $$;

-- server-side only: not in an exposed schema
CREATE SCHEMA private;
CREATE TABLE private.settings (key text PRIMARY KEY, value text);
CREATE FUNCTION private.is_admin() RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = '' AS $$ SELECT false $$;

-- a public bucket whose objects are served by URL only; a private bucket clients may list
INSERT INTO storage.buckets (id, name, public) VALUES ('avatars', 'avatars', true),
  ('invoices', 'invoices', false);
CREATE POLICY "users upload avatars" ON storage.objects FOR INSERT TO authenticated
  WITH CHECK (bucket_id = 'avatars' AND owner_id = (select auth.uid())::text);
CREATE POLICY "invoices are listable" ON storage.objects FOR SELECT TO authenticated
  USING (bucket_id = 'invoices');
