-- The home page reads this view.
-- security_invoker: the view runs with the caller's rights, so the RLS policies on
-- posts and comments still apply (a plain view would run as its owner, postgres,
-- and bypass them).
create view public.published_posts
with (security_invoker = true)
as
select
  p.id,
  p.slug,
  p.title,
  p.published_at,
  p.author_id,
  (select count(*) from public.comments c where c.post_id = p.id) as comment_count
from public.posts p
where p.published_at is not null;

grant select on public.published_posts to anon, authenticated;
