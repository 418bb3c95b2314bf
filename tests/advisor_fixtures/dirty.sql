-- Each advisor lint fires exactly once on this database (run as postgres on a Supabase-shaped
-- database: tests/supabase_shaped.py). The comment before each object says which lint it is for.

-- rls_disabled_in_public and sensitive_columns_exposed (password), duplicate_index (email)
CREATE TABLE public.accounts (id bigint PRIMARY KEY, email text, password text);
CREATE UNIQUE INDEX accounts_email_a ON public.accounts (email);
CREATE UNIQUE INDEX accounts_email_b ON public.accounts (email);

-- policy_exists_rls_disabled (in a schema the API does not expose)
CREATE SCHEMA private;
CREATE TABLE private.notes (id int PRIMARY KEY, body text);
CREATE POLICY notes_read ON private.notes FOR SELECT TO authenticated USING (true);

-- rls_enabled_no_policy
CREATE TABLE public.audit_log (id bigint PRIMARY KEY, event text);
ALTER TABLE public.audit_log ENABLE ROW LEVEL SECURITY;

-- auth_rls_initplan (todos_delete calls auth.uid() per row; the others wrap it)
CREATE TABLE public.todos (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES auth.users (id),
  title text NOT NULL,
  done boolean NOT NULL DEFAULT false
);
CREATE INDEX todos_user_id_idx ON public.todos (user_id);
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY todos_select ON public.todos FOR SELECT TO authenticated
  USING ((select auth.uid()) = user_id);
CREATE POLICY todos_insert ON public.todos FOR INSERT TO authenticated
  WITH CHECK ((select auth.uid()) = user_id);
CREATE POLICY todos_update ON public.todos FOR UPDATE TO authenticated
  USING ((select auth.uid()) = user_id) WITH CHECK ((select auth.uid()) = user_id);
CREATE POLICY todos_delete ON public.todos FOR DELETE TO authenticated
  USING (auth.uid() = user_id);

-- rls_policy_always_true (posts_edit), unused_index (posts_body_idx)
CREATE TABLE public.posts (id bigint PRIMARY KEY, author uuid, body text);
CREATE INDEX posts_body_idx ON public.posts (body);
ALTER TABLE public.posts ENABLE ROW LEVEL SECURITY;
CREATE POLICY posts_read ON public.posts FOR SELECT TO anon, authenticated USING (true);
CREATE POLICY posts_edit ON public.posts FOR UPDATE TO authenticated USING (true);

-- multiple_permissive_policies (anon SELECT), unindexed_foreign_keys (post_id)
CREATE TABLE public.comments (
  id bigint PRIMARY KEY,
  post_id bigint REFERENCES public.posts (id),
  body text,
  hidden boolean NOT NULL DEFAULT false
);
ALTER TABLE public.comments ENABLE ROW LEVEL SECURITY;
CREATE POLICY comments_visible ON public.comments FOR SELECT TO anon USING (NOT hidden);
CREATE POLICY comments_for_anon ON public.comments FOR SELECT TO anon
  USING ((select auth.role()) = 'anon');

-- rls_references_user_metadata
CREATE TABLE public.reports (id bigint PRIMARY KEY, body text);
ALTER TABLE public.reports ENABLE ROW LEVEL SECURITY;
CREATE POLICY reports_admin ON public.reports FOR SELECT TO authenticated
  USING (((select auth.jwt()) -> 'user_metadata' ->> 'role') = 'admin');

-- security_definer_view
CREATE VIEW public.todo_counts AS SELECT user_id, count(*) AS n FROM public.todos GROUP BY user_id;

-- auth_users_exposed
CREATE MATERIALIZED VIEW public.user_directory AS SELECT id, email FROM auth.users;

-- function_search_path_mutable
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.done := NEW.done;
  RETURN NEW;
END
$$;

-- anon_security_definer_function_executable
CREATE FUNCTION public.whoami() RETURNS uuid LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = '' AS $$ SELECT auth.uid() $$;
REVOKE EXECUTE ON FUNCTION public.whoami() FROM PUBLIC, authenticated;

-- authenticated_security_definer_function_executable
CREATE FUNCTION public.delete_my_todos() RETURNS void LANGUAGE sql SECURITY DEFINER
  SET search_path = '' AS $$ DELETE FROM public.todos WHERE user_id = auth.uid() $$;
REVOKE EXECUTE ON FUNCTION public.delete_my_todos() FROM PUBLIC, anon;

-- public_bucket_allows_listing (avatars; the private bucket's policy is fine)
INSERT INTO storage.buckets (id, name, public) VALUES ('avatars', 'avatars', true),
  ('invoices', 'invoices', false);
CREATE POLICY "avatars are listable" ON storage.objects FOR SELECT TO public
  USING (bucket_id = 'avatars');
CREATE POLICY "invoices are listable" ON storage.objects FOR SELECT TO authenticated
  USING (bucket_id = 'invoices');

-- extension_in_public
CREATE EXTENSION citext SCHEMA public;
