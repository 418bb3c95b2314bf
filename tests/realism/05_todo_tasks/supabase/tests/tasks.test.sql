begin;
create extension if not exists pgtap with schema extensions;

select plan(8);

select has_table('public', 'tasks', 'todos was renamed to tasks');
select hasnt_table('public', 'todos', 'no todos table is left');
select has_column('public', 'tasks', 'title', 'task was renamed to title');
select hasnt_column('public', 'tasks', 'is_complete', 'is_complete was dropped');
select enum_has_labels('public', 'task_status', array['todo', 'in_progress', 'done', 'archived']);
select policies_are('public', 'tasks', array[
  'Individuals can create tasks.',
  'Individuals can view their own tasks.',
  'Individuals can update their own tasks.',
  'Individuals can delete their own tasks.'
]);

set local role authenticated;
set local request.jwt.claims to '{"sub": "f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b", "role": "authenticated"}';
select is((select count(*)::int from public.tasks), 3, 'Sam sees his three tasks');

set local request.jwt.claims to '{"sub": "00000000-0000-4000-8000-000000000000", "role": "authenticated"}';
select is_empty($$ select * from public.tasks $$, 'another user sees none of them');

select * from finish();
rollback;
