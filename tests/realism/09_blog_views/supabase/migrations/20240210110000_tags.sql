-- Tags, many-to-many with posts.

create table public.tags (
  id integer generated always as identity primary key,
  name text not null unique
);

create table public.post_tags (
  post_id bigint not null references public.posts (id) on delete cascade,
  tag_id integer not null references public.tags (id) on delete cascade,
  primary key (post_id, tag_id)
);

alter table public.tags enable row level security;
alter table public.post_tags enable row level security;

create policy "Tags are public" on public.tags for select using (true);
create policy "Post tags are public" on public.post_tags for select using (true);
create policy "Authors tag their posts" on public.post_tags for insert to authenticated
  with check ( exists (select 1 from public.posts p where p.id = post_id and p.author_id = (select auth.uid())) );

insert into public.tags (name)
values ('announcements'), ('engineering'), ('postgres'), ('release-notes');

-- The view gains the tag list.
create or replace view public.published_posts
with (security_invoker = true)
as
select
  p.id,
  p.slug,
  p.title,
  p.published_at,
  p.author_id,
  (select count(*) from public.comments c where c.post_id = p.id) as comment_count,
  coalesce((select array_agg(t.name order by t.name)
              from public.post_tags pt
              join public.tags t on t.id = pt.tag_id
             where pt.post_id = p.id), '{}') as tags
from public.posts p
where p.published_at is not null;
