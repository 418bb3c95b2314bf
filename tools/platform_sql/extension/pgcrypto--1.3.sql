-- dbsage stand-in for contrib pgcrypto 1.3: the same functions and signatures, written in
-- SQL and PL/pgSQL for PostgreSQL builds without the C module.
--
-- Emulated, with the same results as pgcrypto:
--   digest(text|bytea, type)             md5, sha1, sha224, sha256, sha384, sha512
--   hmac(text|bytea, key, type)          RFC 2104 over the same algorithms
--   gen_random_bytes(n)                  1..1024 bytes from the server's strong RNG
--   gen_random_uuid()                    the core function
-- NOT emulated (each raises feature_not_supported, SQLSTATE 0A000, when called; creating
-- functions, views or defaults that merely mention them works):
--   crypt, gen_salt (bcrypt/md5/xdes/des password hashing), encrypt/decrypt(_iv) (raw
--   ciphers), pgp_sym_*/pgp_pub_* (OpenPGP), armor, dearmor, pgp_armor_headers, pgp_key_id.
-- Public functions are SQL-standard bodies (BEGIN ATOMIC) or self-contained PL/pgSQL, so
-- they work with any search_path.

\echo Use "CREATE EXTENSION pgcrypto" to load this file. \quit

-- One digest of a byte string by algorithm name; SHA-1 in PL/pgSQL, the others from core.
create function dbsage_standin_digest(data bytea, algorithm text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
declare
  mask constant bigint := 4294967295;
  h0 bigint := 1732584193;  -- 0x67452301
  h1 bigint := 4023233417;  -- 0xEFCDAB89
  h2 bigint := 2562383102;  -- 0x98BADCFE
  h3 bigint := 271733878;   -- 0x10325476
  h4 bigint := 3285377520;  -- 0xC3D2E1F0
  msg bytea;
  w bigint[];
  a bigint; b bigint; c bigint; d bigint; e bigint; f bigint; k bigint; t bigint;
  base integer;
begin
  case lower(algorithm)
    when 'md5' then return decode(md5(data), 'hex');
    when 'sha224' then return sha224(data);
    when 'sha256' then return sha256(data);
    when 'sha384' then return sha384(data);
    when 'sha512' then return sha512(data);
    when 'sha1' then null;  -- below
    else
      raise exception 'Cannot use "%": No such hash algorithm', algorithm using errcode = '39000';
  end case;
  -- SHA-1 (FIPS 180-4) on 64-bit integers masked to 32 bits
  msg := data || '\x80'::bytea;
  msg := msg || decode(repeat('00', (119 - length(data) % 64) % 64), 'hex');
  msg := msg || int8send(length(data)::bigint * 8);
  for chunk in 0 .. length(msg) / 64 - 1 loop
    base := chunk * 64;
    w := array_fill(0::bigint, array[80]);
    for i in 0 .. 15 loop
      w[i + 1] := (get_byte(msg, base + 4 * i)::bigint << 24) | (get_byte(msg, base + 4 * i + 1) << 16)
                | (get_byte(msg, base + 4 * i + 2) << 8) | get_byte(msg, base + 4 * i + 3);
    end loop;
    for i in 16 .. 79 loop
      t := w[i - 2] # w[i - 7] # w[i - 13] # w[i - 15];
      w[i + 1] := ((t << 1) | (t >> 31)) & mask;
    end loop;
    a := h0; b := h1; c := h2; d := h3; e := h4;
    for i in 0 .. 79 loop
      if i < 20 then
        f := (b & c) | ((b # mask) & d); k := 1518500249;   -- 0x5A827999
      elsif i < 40 then
        f := b # c # d; k := 1859775393;                    -- 0x6ED9EBA1
      elsif i < 60 then
        f := (b & c) | (b & d) | (c & d); k := 2400959708;  -- 0x8F1BBCDC
      else
        f := b # c # d; k := 3395469782;                    -- 0xCA62C1D6
      end if;
      t := ((((a << 5) | (a >> 27)) & mask) + f + e + k + w[i + 1]) & mask;
      e := d; d := c; c := ((b << 30) | (b >> 2)) & mask; b := a; a := t;
    end loop;
    h0 := (h0 + a) & mask; h1 := (h1 + b) & mask; h2 := (h2 + c) & mask;
    h3 := (h3 + d) & mask; h4 := (h4 + e) & mask;
  end loop;
  return substring(int8send(h0) from 5) || substring(int8send(h1) from 5) || substring(int8send(h2) from 5)
      || substring(int8send(h3) from 5) || substring(int8send(h4) from 5);
end
$fn$;

-- An HMAC key block: the key padded with zero bytes to the block size, each byte XOR pad.
create function dbsage_standin_hmac_pad(key bytea, block_size integer, pad integer) returns bytea
language plpgsql immutable strict parallel safe as $fn$
declare
  buf bytea := key || decode(repeat('00', block_size - length(key)), 'hex');
begin
  for i in 0 .. block_size - 1 loop
    buf := set_byte(buf, i, get_byte(buf, i) # pad);
  end loop;
  return buf;
end
$fn$;

create function digest(bytea, text) returns bytea language sql immutable strict parallel safe
begin atomic select dbsage_standin_digest($1, $2); end;

create function digest(text, text) returns bytea language sql immutable strict parallel safe
begin atomic select dbsage_standin_digest(convert_to($1, getdatabaseencoding()), $2); end;

create function hmac(bytea, bytea, text) returns bytea language sql immutable strict parallel safe
begin atomic
  with blk as (
    select case lower($3) when 'sha384' then 128 when 'sha512' then 128 else 64 end as size
  ), k as (
    select case when length($2) > blk.size then dbsage_standin_digest($2, $3) else $2 end as key,
           blk.size
    from blk
  )
  select dbsage_standin_digest(
           dbsage_standin_hmac_pad(k.key, k.size, 92)
           || dbsage_standin_digest(dbsage_standin_hmac_pad(k.key, k.size, 54) || $1, $3),
           $3)
  from k;
end;

create function hmac(text, text, text) returns bytea language sql immutable strict parallel safe
begin atomic
  select hmac(convert_to($1, getdatabaseencoding()), convert_to($2, getdatabaseencoding()), $3);
end;

create function gen_random_bytes(integer) returns bytea
language plpgsql volatile strict parallel safe as $fn$
declare
  buf bytea := ''::bytea;
  r bytea;
begin
  if $1 < 1 or $1 > 1024 then
    raise exception 'Length not in range' using errcode = '39000';
  end if;
  while length(buf) < $1 loop
    -- the 14 bytes of a version-4 UUID that carry no version or variant bits
    r := uuid_send(pg_catalog.gen_random_uuid());
    buf := buf || substring(r from 1 for 6) || substring(r from 8 for 1) || substring(r from 10 for 7);
  end loop;
  return substring(buf from 1 for $1);
end
$fn$;

create function gen_random_uuid() returns uuid language sql volatile parallel safe
begin atomic select pg_catalog.gen_random_uuid(); end;

-- Not emulated: each raises feature_not_supported.
create function crypt(text, text) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'crypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function gen_salt(text) returns text
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'gen_salt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function gen_salt(text, integer) returns text
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'gen_salt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function encrypt(bytea, bytea, text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'encrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function decrypt(bytea, bytea, text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'decrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function encrypt_iv(bytea, bytea, bytea, text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'encrypt_iv() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function decrypt_iv(bytea, bytea, bytea, text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'decrypt_iv() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_sym_encrypt(text, text) returns bytea
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'pgp_sym_encrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_sym_encrypt_bytea(bytea, text) returns bytea
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'pgp_sym_encrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_sym_encrypt(text, text, text) returns bytea
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'pgp_sym_encrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_sym_encrypt_bytea(bytea, text, text) returns bytea
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'pgp_sym_encrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_sym_decrypt(bytea, text) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_sym_decrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_sym_decrypt_bytea(bytea, text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_sym_decrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_sym_decrypt(bytea, text, text) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_sym_decrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_sym_decrypt_bytea(bytea, text, text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_sym_decrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_encrypt(text, bytea) returns bytea
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_encrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_encrypt_bytea(bytea, bytea) returns bytea
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_encrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_encrypt(text, bytea, text) returns bytea
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_encrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_encrypt_bytea(bytea, bytea, text) returns bytea
language plpgsql volatile strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_encrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_decrypt(bytea, bytea) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_decrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_decrypt_bytea(bytea, bytea) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_decrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_decrypt(bytea, bytea, text) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_decrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_decrypt_bytea(bytea, bytea, text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_decrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_decrypt(bytea, bytea, text, text) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_decrypt() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_pub_decrypt_bytea(bytea, bytea, text, text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_pub_decrypt_bytea() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_key_id(bytea) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_key_id() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function armor(bytea) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'armor() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function armor(bytea, text[], text[]) returns text
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'armor() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function dearmor(text) returns bytea
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'dearmor() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;

create function pgp_armor_headers(text, key out text, value out text) returns setof record
language plpgsql immutable strict parallel safe as $fn$
begin
  raise exception 'pgp_armor_headers() is not available: dbsage''s SQL stand-in for pgcrypto does not emulate it'
    using errcode = '0A000',
          hint = 'Run this against a server with the real pgcrypto (PostgreSQL 15 here, or Supabase itself).';
end
$fn$;
