-- New top tier for the pastry section.
-- Note: a value added by ALTER TYPE ... ADD VALUE cannot be used in the same transaction,
-- so nothing below uses 'expert'.
alter type public.recipe_difficulty add value if not exists 'expert' after 'hard';
