-- dbsage stand-in for contrib uuid-ossp 1.1: the same functions and signatures, written in
-- SQL and PL/pgSQL for PostgreSQL builds without the C module.
--   uuid_nil, uuid_ns_dns/url/oid/x500  the same constants
--   uuid_generate_v3 / v5               RFC 4122 name-based (MD5 / SHA-1): the same results
--   uuid_generate_v4                    random, from the server's strong RNG (gen_random_uuid)
--   uuid_generate_v1 / v1mc             time-based, with a random node id whose multicast bit
--                                       is set; v1 does NOT use the host's MAC address
-- Public functions are SQL-standard bodies (BEGIN ATOMIC): their calls are bound when the
-- extension is created, so they work with any search_path, e.g. in a security definer
-- function with search_path = ''.

\echo Use "CREATE EXTENSION ""uuid-ossp""" to load this file. \quit

-- SHA-1 (FIPS 180-4) of a byte string, in PL/pgSQL on 64-bit integers masked to 32 bits.
create function dbsage_standin_uuid_sha1(message bytea) returns bytea
language plpgsql immutable strict parallel safe as $fn$
declare
  mask constant bigint := 4294967295;
  h0 bigint := 1732584193;  -- 0x67452301
  h1 bigint := 4023233417;  -- 0xEFCDAB89
  h2 bigint := 2562383102;  -- 0x98BADCFE
  h3 bigint := 271733878;   -- 0x10325476
  h4 bigint := 3285377520;  -- 0xC3D2E1F0
  msg bytea := message || '\x80'::bytea;
  w bigint[];
  a bigint; b bigint; c bigint; d bigint; e bigint; f bigint; k bigint; t bigint;
  base integer;
begin
  -- pad to 56 mod 64 bytes, then append the message length in bits, big-endian
  msg := msg || decode(repeat('00', (119 - length(message) % 64) % 64), 'hex');
  msg := msg || int8send(length(message)::bigint * 8);
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

-- The first 16 bytes of a hash as a UUID of the given version (RFC 4122 variant).
create function dbsage_standin_uuid_from_hash(hash bytea, version integer) returns uuid
language sql immutable strict parallel safe
begin atomic
  select encode(set_byte(set_byte(substring(hash from 1 for 16),
                                  6, (get_byte(hash, 6) & 15) | (version << 4)),
                         8, (get_byte(hash, 8) & 63) | 128), 'hex')::uuid;
end;

-- A version-1 UUID: 60-bit count of 100 ns since 1582-10-15, random clock sequence, random
-- node id with the multicast bit set (so it can never collide with a real MAC address).
create function dbsage_standin_uuid_time_based() returns uuid
language plpgsql volatile strict parallel safe as $fn$
declare
  ticks bigint := (extract(epoch from clock_timestamp()) * 10000000)::bigint + 122192928000000000;
  rnd bytea := uuid_send(pg_catalog.gen_random_uuid());
  clock_seq integer := ((get_byte(rnd, 0) << 8) | get_byte(rnd, 1)) & 16383;
  node bytea := substring(rnd from 10 for 6);
begin
  node := set_byte(node, 0, get_byte(node, 0) | 1);
  return (lpad(to_hex(ticks & 4294967295), 8, '0')
       || lpad(to_hex((ticks >> 32) & 65535), 4, '0')
       || lpad(to_hex(((ticks >> 48) & 4095) | 4096), 4, '0')
       || lpad(to_hex(clock_seq | 32768), 4, '0')
       || encode(node, 'hex'))::uuid;
end
$fn$;

create function uuid_nil() returns uuid language sql immutable strict parallel safe
begin atomic select '00000000-0000-0000-0000-000000000000'::uuid; end;
create function uuid_ns_dns() returns uuid language sql immutable strict parallel safe
begin atomic select '6ba7b810-9dad-11d1-80b4-00c04fd430c8'::uuid; end;
create function uuid_ns_url() returns uuid language sql immutable strict parallel safe
begin atomic select '6ba7b811-9dad-11d1-80b4-00c04fd430c8'::uuid; end;
create function uuid_ns_oid() returns uuid language sql immutable strict parallel safe
begin atomic select '6ba7b812-9dad-11d1-80b4-00c04fd430c8'::uuid; end;
create function uuid_ns_x500() returns uuid language sql immutable strict parallel safe
begin atomic select '6ba7b814-9dad-11d1-80b4-00c04fd430c8'::uuid; end;

create function uuid_generate_v1() returns uuid language sql volatile strict parallel safe
begin atomic select dbsage_standin_uuid_time_based(); end;
create function uuid_generate_v1mc() returns uuid language sql volatile strict parallel safe
begin atomic select dbsage_standin_uuid_time_based(); end;

create function uuid_generate_v3(namespace uuid, name text) returns uuid
language sql immutable strict parallel safe
begin atomic
  select dbsage_standin_uuid_from_hash(
    decode(md5(uuid_send(namespace) || convert_to(name, getdatabaseencoding())), 'hex'), 3);
end;

create function uuid_generate_v4() returns uuid language sql volatile strict parallel safe
begin atomic select pg_catalog.gen_random_uuid(); end;

create function uuid_generate_v5(namespace uuid, name text) returns uuid
language sql immutable strict parallel safe
begin atomic
  select dbsage_standin_uuid_from_hash(
    dbsage_standin_uuid_sha1(uuid_send(namespace) || convert_to(name, getdatabaseencoding())), 5);
end;
