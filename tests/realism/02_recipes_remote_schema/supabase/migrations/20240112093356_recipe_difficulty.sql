-- Recipes get a difficulty rating shown as a badge in the list view.
create type public.recipe_difficulty as enum ('easy', 'medium', 'hard');

alter table public.recipes
  add column difficulty public.recipe_difficulty not null default 'easy';

comment on column public.recipes.difficulty is 'Shown as a badge; filterable in search.';
