-- Tables for the RLS audit and the impersonation matrix (run as postgres on a Supabase-shaped
-- database, tests/supabase_shaped.py, once an admin added the two users below to auth.users).
-- User A owns 2 todos, user B 3.

-- owner policies, one per command: covered everywhere
CREATE TABLE public.todos (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES auth.users (id),
  title text NOT NULL,
  done boolean NOT NULL DEFAULT false
);
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY todos_select ON public.todos FOR SELECT TO authenticated
  USING ((select auth.uid()) = user_id);
CREATE POLICY todos_insert ON public.todos FOR INSERT TO authenticated
  WITH CHECK ((select auth.uid()) = user_id);
CREATE POLICY todos_update ON public.todos FOR UPDATE TO authenticated
  USING ((select auth.uid()) = user_id) WITH CHECK ((select auth.uid()) = user_id);
CREATE POLICY todos_delete ON public.todos FOR DELETE TO authenticated
  USING ((select auth.uid()) = user_id);
INSERT INTO public.todos (user_id, title) VALUES
  ('aaaaaaaa-0000-0000-0000-000000000001', 'A one'),
  ('aaaaaaaa-0000-0000-0000-000000000001', 'A two'),
  ('bbbbbbbb-0000-0000-0000-000000000002', 'B one'),
  ('bbbbbbbb-0000-0000-0000-000000000002', 'B two'),
  ('bbbbbbbb-0000-0000-0000-000000000002', 'B three');

-- public read only: INSERT, UPDATE and DELETE uncovered
CREATE TABLE public.notices (id serial PRIMARY KEY, body text NOT NULL);
ALTER TABLE public.notices ENABLE ROW LEVEL SECURITY;
CREATE POLICY notices_read ON public.notices FOR SELECT TO anon, authenticated USING (true);
INSERT INTO public.notices (body) VALUES ('one'), ('two'), ('three');

-- one FOR ALL policy covers every command (tenant by a claim)
CREATE TABLE public.projects (id int PRIMARY KEY, tenant text NOT NULL, name text);
ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY;
CREATE POLICY projects_tenant ON public.projects FOR ALL TO authenticated
  USING (tenant = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant'))
  WITH CHECK (tenant = ((select auth.jwt()) -> 'app_metadata' ->> 'tenant'));
INSERT INTO public.projects VALUES (1, 't1', 'x'), (2, 't1', 'y'), (3, 't2', 'z');

-- RLS off: the grants alone decide
CREATE TABLE public.tags (name text PRIMARY KEY);
INSERT INTO public.tags VALUES ('red'), ('blue');

-- RLS on and forced, no policy, and no grant to the API roles
CREATE TABLE public.secrets (id int PRIMARY KEY, value text);
ALTER TABLE public.secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.secrets FORCE ROW LEVEL SECURITY;
REVOKE ALL ON public.secrets FROM anon, authenticated;

-- only a restrictive policy: no command is reachable
CREATE TABLE public.flags (id int PRIMARY KEY, on_ boolean);
ALTER TABLE public.flags ENABLE ROW LEVEL SECURITY;
CREATE POLICY flags_narrow ON public.flags AS RESTRICTIVE FOR SELECT TO authenticated
  USING (on_);
