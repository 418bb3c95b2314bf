begin;
create extension if not exists pgtap with schema extensions;

select plan(7);

select tables_are('public', array['ingredients', 'recipes', 'recipe_ingredients', 'favorites']);
select enum_has_labels('public', 'recipe_difficulty', array['easy', 'medium', 'hard', 'expert']);
select has_index('public', 'recipes', 'recipes_title_trgm_idx', 'trigram index on recipes.title');
select col_default_is('public', 'recipes', 'difficulty', 'easy'::public.recipe_difficulty,
                      'recipes default to easy');

-- Anonymous visitors see public recipes only.
set local role anon;
select results_eq(
  $$ select title from public.recipes order by title $$,
  $$ values ('Chocolate cake'::text) $$,
  'anon sees only public recipes'
);
select is(
  (select count(*)::int from public.search_recipes('chocolat')),
  1,
  'search_recipes finds by a partial title'
);
reset role;

-- The author sees both.
set local role authenticated;
set local request.jwt.claims to '{"sub": "c7a9e2d4-5b1f-4e3a-9d8c-7f6e5d4c3b21", "role": "authenticated"}';
select is((select count(*)::int from public.recipes), 2, 'the author sees her private recipe too');

select * from finish();
rollback;
