-- Document the schema; the comments show up in the generated API docs.

comment on table public.posts is 'Blog posts. Draft while published_at is null.';
comment on column public.posts.slug is 'URL part, unique, lower-case words joined by dashes.';
comment on column public.posts.published_at is 'Null for drafts.';
comment on table public.comments is 'Reader comments, visible once the post is published.';
comment on view public.published_posts is 'Published posts with their comment count, newest first in the app.';
comment on policy "Published posts are public" on public.posts is 'Drafts stay visible to their author.';
