begin;
create extension if not exists pgtap with schema extensions;

select plan(6);

select results_eq(
  $$ select id, public from storage.buckets where id in ('avatars', 'documents', 'team-assets') order by id $$,
  $$ values ('avatars'::text, true), ('documents', false), ('team-assets', false) $$,
  'three buckets, only avatars public'
);
select ok(
  (select count(*) from pg_policies where schemaname = 'storage' and tablename = 'objects'
      and (qual like '%foldername%' or with_check like '%foldername%')) >= 7,
  'the storage policies check the folder name'
);

-- Rita: her document, her team's logo and the public avatar.
set local role authenticated;
set local request.jwt.claims to '{"sub": "d1000000-0000-4000-8000-000000000001", "role": "authenticated"}';
select set_eq(
  $$ select name from storage.objects $$,
  array['d1000000-0000-4000-8000-000000000001/contract.pdf',
        '7ea70000-0000-4000-8000-000000000007/logo.svg',
        'd2000000-0000-4000-8000-000000000002/me.png'],
  'Rita sees her own document, her team asset and the public avatar'
);
select throws_ok(
  $$ insert into storage.objects (bucket_id, name, owner)
     values ('documents', 'd2000000-0000-4000-8000-000000000002/sneaky.pdf', auth.uid()) $$,
  '42501', null,
  'cannot upload into someone else''s folder'
);
select lives_ok(
  $$ insert into public.documents (name, storage_path)
     values ('notes.txt', 'd1000000-0000-4000-8000-000000000001/notes.txt') $$,
  'documents row in the own folder'
);
select is((select count(*)::int from public.documents), 2, 'Rita sees her two documents only');

select * from finish();
rollback;
