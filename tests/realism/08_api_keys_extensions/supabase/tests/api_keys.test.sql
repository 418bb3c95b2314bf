begin;
create extension if not exists pgtap with schema extensions;

select plan(7);

select has_extension('extensions', 'uuid-ossp', 'uuid-ossp is in the extensions schema');
select has_extension('extensions', 'pgcrypto', 'pgcrypto is in the extensions schema');
select matches(
  (select pg_get_expr(d.adbin, d.adrelid)
     from pg_attrdef d
     join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
    where d.adrelid = 'public.api_keys'::regclass and a.attname = 'id'),
  'uuid_generate_v4\(\)',
  'api_keys.id defaults to uuid_generate_v4()'
);

select is(
  public.verify_api_key('sk_local_development_only'),
  'a9e10000-0000-4000-8000-0000000000a9'::uuid,
  'the seeded key verifies'
);
select is(public.verify_api_key('sk_wrong'), null, 'a wrong key does not');

set local role authenticated;
set local request.jwt.claims to '{"sub": "a9e10000-0000-4000-8000-0000000000a9", "role": "authenticated"}';
select matches(public.create_api_key('ci'), '^sk_[0-9a-f]{48}$', 'create_api_key returns a key once');
select throws_ok(
  $$ select public.verify_api_key('sk_local_development_only') $$,
  '42501', null,
  'authenticated users cannot call verify_api_key'
);

select * from finish();
rollback;
