-- Pantry staples for local development.
insert into public.ingredients (name, unit)
values
  ('flour', 'g'),
  ('sugar', 'g'),
  ('butter', 'g'),
  ('egg', 'pcs'),
  ('milk', 'ml'),
  ('dark chocolate', 'g');

insert into auth.users (id, email, raw_user_meta_data, created_at)
values ('c7a9e2d4-5b1f-4e3a-9d8c-7f6e5d4c3b21', 'chef@example.com', '{"full_name": "Chef"}',
        '2024-01-06 12:00:00+00');

insert into public.recipes (id, author_id, title, servings, is_public, difficulty)
values
  ('5e0c3c6a-1d2b-4f7e-8a9b-0c1d2e3f4a51', 'c7a9e2d4-5b1f-4e3a-9d8c-7f6e5d4c3b21',
   'Chocolate cake', 8, true, 'medium'),
  ('9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c62', 'c7a9e2d4-5b1f-4e3a-9d8c-7f6e5d4c3b21',
   'Secret pancakes', 4, false, 'easy');

insert into public.recipe_ingredients (recipe_id, ingredient_id, quantity)
select '5e0c3c6a-1d2b-4f7e-8a9b-0c1d2e3f4a51', i.id, q.quantity
  from (values ('flour', 200), ('sugar', 150), ('butter', 100), ('egg', 3),
               ('dark chocolate', 120)) as q (name, quantity)
  join public.ingredients i using (name);
