begin;
create extension if not exists pgtap with schema extensions;

select plan(8);

select policies_are('public', 'projects', array[
  'Tenant members can read projects',
  'Tenant members can create projects',
  'Tenant members can update projects'
]);
select is_definer('public', 'is_org_admin', array['uuid'], 'is_org_admin is SECURITY DEFINER');
select function_privs_are('public', 'is_org_admin', array['uuid'], 'anon', array[]::text[],
                          'anon cannot execute is_org_admin');

-- An Acme member with org_id = Acme in the token.
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-000000000001", "role": "authenticated", "email": "owner@acme.test", "org_id": "0a000000-0000-4000-8000-0000000000a1"}';

select results_eq(
  $$ select name from public.projects order by name $$,
  $$ values ('Giant magnet'::text), ('Rocket skates'::text) $$,
  'Acme sees only its own projects'
);

select lives_ok(
  $$ insert into public.projects (name) values ('Earthquake pills') $$,
  'org_id defaults from the JWT claim'
);

select throws_ok(
  $$ insert into public.projects (org_id, name)
     values ('0b000000-0000-4000-8000-0000000000b2', 'Sabotage') $$,
  '42501',
  null,
  'cannot create a project in another tenant'
);

select is(
  (select actor from public.audit_log
    where table_name = 'projects' and action = 'INSERT'
      and row_id = (select id::text from public.projects where name = 'Earthquake pills')),
  'a0000000-0000-4000-8000-000000000001'::uuid,
  'the audit trigger logged the insert with its actor'
);

select ok(public.is_org_admin('0a000000-0000-4000-8000-0000000000a1'), 'the owner is an admin');

select * from finish();
rollback;
