-- Fuzzy title search ("chocolat" finds "Chocolate cake").
create extension if not exists pg_trgm with schema extensions;

create index if not exists recipes_title_trgm_idx
  on public.recipes
  using gin (title extensions.gin_trgm_ops);

create or replace function public.search_recipes(query text)
returns setof public.recipes
language sql
stable
set search_path = ''
as $$
  select *
    from public.recipes
   where title operator(extensions.%) query
      or title ilike '%' || query || '%'
   order by extensions.similarity(title, query) desc
$$;
