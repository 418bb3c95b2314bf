begin;
create extension if not exists pgtap with schema extensions;

select plan(11);

select has_table('public', 'profiles', 'profiles table exists');
select col_is_pk('public', 'profiles', 'id', 'profiles.id is the primary key');
select ok(
  (select relrowsecurity from pg_class where oid = 'public.profiles'::regclass),
  'RLS is enabled on profiles'
);
select policies_are('public', 'profiles', array[
  'Public profiles are viewable by everyone.',
  'Users can insert their own profile.',
  'Users can update own profile.'
]);
select is_definer('public', 'handle_new_user', '{}'::name[], 'handle_new_user is SECURITY DEFINER');
select has_trigger('auth', 'users', 'on_auth_user_created', 'signup trigger on auth.users');

-- A new user gets a profile from the trigger.
insert into auth.users (id, email, raw_user_meta_data)
values ('0b5f8b9a-6a5e-4c1d-8f7e-3d2c1b0a9e11', 'grace@example.com',
        '{"user_name": "grace", "full_name": "Grace Hopper"}');

select is(
  (select full_name from public.profiles where id = '0b5f8b9a-6a5e-4c1d-8f7e-3d2c1b0a9e11'),
  'Grace Hopper',
  'handle_new_user copied full_name'
);

select count(*) as profile_count from public.profiles \gset

-- As that user: may update the own row, not another one.
set local role authenticated;
set local request.jwt.claims to '{"sub": "0b5f8b9a-6a5e-4c1d-8f7e-3d2c1b0a9e11", "role": "authenticated"}';

update public.profiles set website = 'https://example.com/grace'
 where id = '0b5f8b9a-6a5e-4c1d-8f7e-3d2c1b0a9e11';
select isnt(
  (select updated_at from public.profiles where id = '0b5f8b9a-6a5e-4c1d-8f7e-3d2c1b0a9e11'),
  null,
  'the updated_at trigger ran'
);

select results_eq(
  $$ with changed as (
       update public.profiles set website = 'https://evil.example.com'
        where id <> '0b5f8b9a-6a5e-4c1d-8f7e-3d2c1b0a9e11' returning 1)
     select count(*)::int from changed $$,
  array[0],
  'other users'' profiles cannot be updated'
);

select throws_ok(
  $$ insert into public.profiles (id) values ('11111111-1111-4111-8111-111111111111') $$,
  '42501',
  null,
  'cannot insert a profile for someone else'
);

select is(
  (select count(*)::int from public.profiles),
  :profile_count,
  'everyone can read every profile'
);

select * from finish();
rollback;
