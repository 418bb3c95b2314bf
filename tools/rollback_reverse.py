"""The reverse script of a migration: from the catalog state after it back to the state before.

`derive(before, after)` compares the two captures of tools/rollback_state.py object by object
(by OID, so a rename is a rename) and writes the DDL that turns `after` back into `before`, in
an order that works:

  1. drop what the migration added to objects that stay (triggers, policies, constraints,
     indexes, publication membership), the views it created or changed, and the tables it
     created; move created types and functions whose name is needed back out of the way;
  2. rename and move back what it renamed or moved (schemas first);
  3. recreate the schemas, types, sequences and functions it dropped;
  4. undo its changes to tables that stay: columns (dropped ones come back where PostgreSQL
     allows: at the end, with a warning when that is not where they were), types, defaults,
     identity, storage options, RLS;
  5. drop the sequences, functions, types, schemas, publications and extensions it created;
  6. recreate the tables, indexes and views it dropped (in dependency order), restore
     function bodies, enum values, composite attributes, domains, sequences' settings;

then, after the saved data is back (`deferred`): constraints, NOT NULL, triggers, policies,
ownership, privileges (in their original order, so pg_dump prints them as before), comments,
publication membership and sequence values.

What cannot be undone is returned as `refusals` (with the reason), never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dbsage.tools.rollback_state import (
    CatalogState,
    Column,
    DefaultAcl,
    Function,
    Policy,
    Publication,
    Relation,
    Schema,
    Type,
)

# ---------------------------------------------------------------------------------------------
# SQL text
# ---------------------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


def _keywords() -> frozenset[str]:
    from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

    return frozenset(RESERVED_KEYWORDS) | frozenset(TYPE_FUNC_NAME_KEYWORDS) | \
        frozenset(COL_NAME_KEYWORDS)


_KEYWORDS: frozenset[str] | None = None


def qi(name: str) -> str:
    """An identifier as SQL: bare when PostgreSQL reads it back unchanged, else quoted."""
    global _KEYWORDS
    if _KEYWORDS is None:
        _KEYWORDS = _keywords()
    if _PLAIN.match(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def ql(text: str | None) -> str:
    """A string literal (NULL for None)."""
    if text is None:
        return "NULL"
    return "'" + text.replace("'", "''") + "'"


def qn(schema: str, name: str) -> str:
    return f"{qi(schema)}.{qi(name)}"


_REL_KIND = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
             "S": "SEQUENCE", "f": "FOREIGN TABLE"}
_FUNC_KIND = {"f": "FUNCTION", "p": "PROCEDURE", "a": "AGGREGATE", "w": "FUNCTION"}

# ---------------------------------------------------------------------------------------------
# Privileges
# ---------------------------------------------------------------------------------------------

_PRIVS = {"r": "SELECT", "w": "UPDATE", "a": "INSERT", "d": "DELETE", "D": "TRUNCATE",
          "x": "REFERENCES", "t": "TRIGGER", "X": "EXECUTE", "U": "USAGE", "C": "CREATE",
          "c": "CONNECT", "T": "TEMPORARY", "m": "MAINTAIN", "s": "SET", "A": "ALTER SYSTEM"}
_ACL_ITEM = re.compile(r'^(?P<grantee>"(?:[^"]|"")*"|[^=]*)=(?P<privs>[^/]*)/(?P<grantor>.*)$')


@dataclass(frozen=True)
class AclItem:
    grantee: str  # "" is PUBLIC
    privileges: str  # letters, each followed by * when grantable
    grantor: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.grantee, self.grantor)

    def letters(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for i, ch in enumerate(self.privileges):
            if ch == "*":
                continue
            out[ch] = i + 1 < len(self.privileges) and self.privileges[i + 1] == "*"
        return out


def _unquote(name: str) -> str:
    if name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name


def parse_acl(items: Iterable[str]) -> list[AclItem]:
    out = []
    for text in items:
        m = _ACL_ITEM.match(text)
        if m:
            out.append(AclItem(_unquote(m["grantee"]), m["privs"], _unquote(m["grantor"])))
    return out


def _role(name: str) -> str:
    return "PUBLIC" if name == "" else qi(name)


def _privs(letters: Iterable[str]) -> str:
    return ", ".join(_PRIVS[c] for c in letters)


def _grant(on: str, item: AclItem, owner: str, columns: str = "") -> list[str]:
    """GRANT statements that add `item` as one ACL entry (grant options separately)."""
    letters = item.letters()
    plain = [c for c, g in letters.items() if not g]
    grantable = [c for c, g in letters.items() if g]
    by = f" GRANTED BY {qi(item.grantor)}" if item.grantor != owner else ""
    out = []
    if plain:
        out.append(f"GRANT {_col_privs(plain, columns)} ON {on} TO {_role(item.grantee)}{by}")
    if grantable:
        out.append(f"GRANT {_col_privs(grantable, columns)} ON {on} TO {_role(item.grantee)} "
                   f"WITH GRANT OPTION{by}")
    return out


def _col_privs(letters: list[str], columns: str) -> str:
    if not columns:
        return _privs(letters)
    return ", ".join(f"{_PRIVS[c]} ({columns})" for c in letters)


def _revoke_all(on: str, item: AclItem, owner: str, columns: str = "") -> str:
    by = f" GRANTED BY {qi(item.grantor)}" if item.grantor != owner else ""
    what = _col_privs(list(item.letters()), columns) if columns else "ALL"
    return f"REVOKE {what} ON {on} FROM {_role(item.grantee)}{by} CASCADE"


def acl_statements(on: str, current: Sequence[str] | None, target: Sequence[str], owner: str,
                   *, possible: Iterable[str] = (), columns: str = "") -> list[str]:
    """Statements that turn the ACL `current` into `target`, entry order included (pg_dump
    prints GRANTs in the ACL's order). `current` None: unknown (a new object, which got the
    default privileges): every possible grantee is revoked first."""
    tgt = parse_acl(target)
    if current is None:
        grantees = {i.grantee for i in tgt} | set(possible) | {owner, ""}
        what = _col_privs(sorted({c for i in tgt for c in i.letters()}) or ["r"], columns) \
            if columns else "ALL"
        reset = [f"REVOKE {what} ON {on} FROM "
                 + ", ".join(_role(g) for g in sorted(grantees)) + " CASCADE"]
        for item in tgt:
            reset += _grant(on, item, owner, columns)
        return reset
    cur = parse_acl(current)
    if cur == tgt:
        return []
    k = 0
    while k < min(len(cur), len(tgt)) and cur[k].key == tgt[k].key:
        k += 1
    out: list[str] = []
    for a, b in zip(cur[:k], tgt[:k], strict=True):
        if a.privileges == b.privileges:
            continue
        la, lb = a.letters(), b.letters()
        extra = [c for c in la if c not in lb or (la[c] and not lb[c])]
        if extra:
            by = f" GRANTED BY {qi(a.grantor)}" if a.grantor != owner else ""
            only_option = [c for c in extra if c in lb]
            full = [c for c in extra if c not in lb]
            if full:
                out.append(f"REVOKE {_col_privs(full, columns)} ON {on} FROM "
                           f"{_role(a.grantee)}{by} CASCADE")
            if only_option:
                out.append(f"REVOKE GRANT OPTION FOR {_col_privs(only_option, columns)} ON "
                           f"{on} FROM {_role(a.grantee)}{by} CASCADE")
        missing = {c: g for c, g in lb.items() if c not in la or (g and not la[c])}
        if missing:
            out += _grant(on, AclItem(b.grantee, "".join(c + ("*" if g else "")
                                                         for c, g in missing.items()),
                                      b.grantor), owner, columns)
    for item in cur[k:]:
        out.append(_revoke_all(on, item, owner, columns))
    for item in tgt[k:]:
        out += _grant(on, item, owner, columns)
    return out


_DEFACL_OBJECTS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES",
                   "n": "SCHEMAS", "L": "LARGE OBJECTS"}


def default_acl_statements(before: Sequence[DefaultAcl], after: Sequence[DefaultAcl]
                           ) -> list[str]:
    """ALTER DEFAULT PRIVILEGES statements that bring `after` back to `before`."""
    b = {(d.role, d.schema, d.objtype): d for d in before}
    a = {(d.role, d.schema, d.objtype): d for d in after}
    out: list[str] = []
    for key in sorted(set(a) | set(b), key=lambda k: (k[0], k[1] or "", k[2])):
        role, schema, objtype = key
        cur = list(a[key].acl) if key in a else []
        tgt = list(b[key].acl) if key in b else []
        if cur == tgt:
            continue
        head = f"ALTER DEFAULT PRIVILEGES FOR ROLE {qi(role)}"
        if schema:
            head += f" IN SCHEMA {qi(schema)}"
        objects = _DEFACL_OBJECTS.get(objtype)
        if objects is None:
            continue
        for stmt in acl_statements(objects, cur, tgt, role):
            out.append(f"{head} {stmt.replace(' ON ' + objects, ' ON ' + objects)}"
                       .replace(" CASCADE", "")
                       .replace(f" GRANTED BY {qi(role)}", ""))
    return out


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """A question to ask the database before a rollback: `sql` returns rows when the rollback
    cannot go ahead, and `message` says why (with `{rows}`)."""

    sql: str
    message: str


@dataclass
class Derived:
    """A reverse script (before and after the data restore) and what it cannot do."""

    statements: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    absent: list[tuple[str, ...]] = field(default_factory=list)


@dataclass
class _Phases:
    s1: list[str] = field(default_factory=list)  # drop additions, created tables and views
    s2: list[str] = field(default_factory=list)  # renames back
    s3: list[str] = field(default_factory=list)  # recreate schemas, types, sequences, functions
    s4: list[str] = field(default_factory=list)  # undo changes of tables that stay
    s5: list[str] = field(default_factory=list)  # drop created sequences, then functions,
    s5t: list[str] = field(default_factory=list)  # types (functions use them),
    s5p: list[str] = field(default_factory=list)  # publications,
    s5x: list[str] = field(default_factory=list)  # extensions,
    s5n: list[str] = field(default_factory=list)  # schemas (once empty)
    s6: list[str] = field(default_factory=list)  # recreate tables, views; restore bodies
    s7: list[str] = field(default_factory=list)  # after data: constraints, triggers, policies
    s8: list[str] = field(default_factory=list)  # after data: owners, privileges, comments


# ---------------------------------------------------------------------------------------------
# Derivation
# ---------------------------------------------------------------------------------------------


class _Deriver:
    def __init__(self, before: CatalogState, after: CatalogState) -> None:
        self.b, self.a = before, after
        self.p = _Phases()
        self.out = Derived()
        self.user = before.current_user or after.current_user
        self.grantees = sorted({item.grantee for d in before.default_acls + after.default_acls
                                for item in parse_acl(d.acl)} | {""})

    # --- names ------------------------------------------------------------------------------

    def schema_now(self, schema_oid: int, name: str) -> str:
        """The schema's name once the renames are undone."""
        s = self.b.schemas.get(schema_oid)
        return s.name if s is not None else name

    def new(self, oid: int) -> bool:
        return oid > self.b.watermark

    def rel_after(self, r: Relation) -> str:
        return qn(r.schema, r.name)

    def rel_before(self, r: Relation) -> str:
        return qn(r.schema, r.name)

    def rel_created_now(self, r: Relation) -> str:
        return qn(self.schema_now(r.schema_oid, r.schema), r.name)

    # --- entry ------------------------------------------------------------------------------

    def run(self, unseen: Iterable[str], other: Iterable[str]) -> Derived:
        for what in unseen:
            self.out.refusals.append(f"{what} changed through a statement dbsage could not see "
                                     "into before it ran (a function or DO block), so its "
                                     "earlier state is unknown")
        for what in other:
            self.out.refusals.append(f"the migration created or changed a {what}, which dbsage "
                                     "does not reverse")
        self.extensions()
        self.publications_objects()
        self.schemas()
        self.types()
        self.functions()
        self.relations()
        self.p.s8 += default_acl_statements(self.b.default_acls, self.a.default_acls)
        p = self.p
        drops = sorted(p.s5, key=lambda x: not x.startswith("DROP SEQUENCE"))
        stmts = p.s1 + p.s2 + p.s3 + p.s4 + drops + p.s5t + p.s5p + p.s5x + p.s5n + p.s6
        if stmts or p.s7 or p.s8:
            stmts = ["SET LOCAL check_function_bodies = off", *stmts]
        self.out.statements = stmts
        self.out.deferred = p.s7 + p.s8
        return self.out

    # --- extensions -------------------------------------------------------------------------

    def extensions(self) -> None:
        for oid, e in self.a.extensions.items():
            if oid not in self.b.extensions and self.new(oid):
                self.p.s5x.append(f"DROP EXTENSION {qi(e.name)}")
                self.out.absent.append(("extension", e.name))
        for oid, e in self.b.extensions.items():
            after = self.a.extensions.get(oid)
            if after is None:
                self.out.refusals.append(f"extension {e.name} was dropped: its objects and their "
                                         "data cannot be brought back")
            elif after.version != e.version:
                self.out.refusals.append(f"extension {e.name} was updated from {e.version} to "
                                         f"{after.version}; extension updates are not reversible")
            elif after.comment != e.comment:
                self.p.s8.append(f"COMMENT ON EXTENSION {qi(e.name)} IS {ql(e.comment)}")

    # --- publications -----------------------------------------------------------------------

    def publications_objects(self) -> None:
        for oid, p in self.a.publications.items():
            if oid not in self.b.publications and self.new(oid):
                self.p.s5p.append(f"DROP PUBLICATION {qi(p.name)}")
                self.out.absent.append(("publication", p.name))
        for oid, p in self.b.publications.items():
            after = self.a.publications.get(oid)
            if after is None:
                self.p.s7 += self.create_publication(p)
                continue
            if after.name != p.name:
                self.p.s2.append(f"ALTER PUBLICATION {qi(after.name)} RENAME TO {qi(p.name)}")
            if _pub_options(after) != _pub_options(p):
                self.p.s6.append(f"ALTER PUBLICATION {qi(p.name)} SET ({_pub_options(p)})")
            if set(after.schemas) != set(p.schemas):
                for s in sorted(set(after.schemas) - set(p.schemas)):
                    self.p.s1.append(f"ALTER PUBLICATION {qi(after.name)} DROP TABLES IN "
                                     f"SCHEMA {qi(s)}")
                for s in sorted(set(p.schemas) - set(after.schemas)):
                    self.p.s7.append(f"ALTER PUBLICATION {qi(p.name)} ADD TABLES IN SCHEMA "
                                     f"{qi(s)}")
            if after.owner != p.owner:
                self.p.s8.append(f"ALTER PUBLICATION {qi(p.name)} OWNER TO {qi(p.owner)}")
            if after.comment != p.comment:
                self.p.s8.append(f"COMMENT ON PUBLICATION {qi(p.name)} IS {ql(p.comment)}")

    def create_publication(self, p: Publication) -> list[str]:
        target = " FOR ALL TABLES" if p.all_tables else ""
        parts = [f"TABLE {_pub_table(t.schema, t.name, t.columns, t.where)}" for t in p.tables]
        parts += [f"TABLES IN SCHEMA {qi(s)}" for s in p.schemas]
        if parts and not p.all_tables:
            target = " FOR " + ", ".join(parts)
        out = [f"CREATE PUBLICATION {qi(p.name)}{target} WITH ({_pub_options(p)})"]
        if p.owner != self.user:
            out.append(f"ALTER PUBLICATION {qi(p.name)} OWNER TO {qi(p.owner)}")
        if p.comment:
            out.append(f"COMMENT ON PUBLICATION {qi(p.name)} IS {ql(p.comment)}")
        return out

    # --- schemas ----------------------------------------------------------------------------

    def schemas(self) -> None:
        for oid, s in self.a.schemas.items():
            if oid not in self.b.schemas and self.new(oid):
                self.p.s5n.append(f"DROP SCHEMA {qi(s.name)}")
                self.out.absent.append(("schema", s.name))
        for oid, s in self.b.schemas.items():
            after = self.a.schemas.get(oid)
            if after is None:
                self.p.s3.append(f"CREATE SCHEMA {qi(s.name)}")
                if s.owner != self.user:
                    self.p.s8.append(f"ALTER SCHEMA {qi(s.name)} OWNER TO {qi(s.owner)}")
                self.p.s8 += acl_statements(f"SCHEMA {qi(s.name)}", None, s.acl, s.owner,
                                            possible=self.grantees)
                if s.comment:
                    self.p.s8.append(f"COMMENT ON SCHEMA {qi(s.name)} IS {ql(s.comment)}")
                continue
            if after.name != s.name:
                self.p.s2.insert(0, f"ALTER SCHEMA {qi(after.name)} RENAME TO {qi(s.name)}")
            self.common_schema(after, s)

    def common_schema(self, a: Schema, b: Schema) -> None:
        on = f"SCHEMA {qi(b.name)}"
        if a.owner != b.owner:
            self.p.s8.append(f"ALTER SCHEMA {qi(b.name)} OWNER TO {qi(b.owner)}")
        self.p.s8 += acl_statements(on, _owned_acl(a.acl, a.owner, b.owner), b.acl, b.owner)
        if a.comment != b.comment:
            self.p.s8.append(f"COMMENT ON SCHEMA {qi(b.name)} IS {ql(b.comment)}")

    # --- types ------------------------------------------------------------------------------

    def types(self) -> None:
        b_names = {(t.schema, t.name) for t in self.b.types.values()}
        created = [t for oid, t in self.a.types.items() if oid not in self.b.types
                   and self.new(oid) and not t.extension]
        for t in sorted(created, key=lambda t: -t.oid):
            name = qn(t.schema, t.name)
            if (t.schema, t.name) in b_names:  # a type of that name comes back: move this one
                temp = f"{t.name}__dbsage_rb_{t.oid}"
                self.p.s1.append(f"ALTER TYPE {name} RENAME TO {qi(temp)}")
                name = qn(t.schema, temp)
            kind = "DOMAIN" if t.kind == "d" else "TYPE"
            self.p.s5t.append(f"DROP {kind} {self._moved(name, t.schema_oid, t.schema)}")
            self.out.absent.append(("type", t.schema, t.name))
        for oid, t in sorted(self.b.types.items()):
            if t.extension:
                continue
            after = self.a.types.get(oid)
            if after is None:
                self.recreate_type(t)
            else:
                self.change_type(after, t)

    def _moved(self, name: str, schema_oid: int, schema: str) -> str:
        """`name` (schema.object) with its schema as it is called once renames are undone."""
        now = self.schema_now(schema_oid, schema)
        if now == schema:
            return name
        return qi(now) + name[len(qi(schema)):]

    def type_sql(self, t: Type) -> str:
        name = qn(t.schema, t.name)
        if t.kind == "e":
            return f"CREATE TYPE {name} AS ENUM ({', '.join(ql(x) for x in t.labels)})"
        if t.kind == "c":
            attrs = ", ".join(f"{qi(c.name)} {c.type}"
                              + (f" COLLATE {c.collation}" if c.collation else "")
                              for c in t.attributes)
            return f"CREATE TYPE {name} AS ({attrs})"
        if t.kind == "d":
            sql = f"CREATE DOMAIN {name} AS {t.base}"
            if t.collation:
                sql += f" COLLATE {t.collation}"
            if t.default is not None:
                sql += f" DEFAULT {t.default}"
            for c in t.constraints:
                if c.type == "c" and c.validated:
                    sql += f" CONSTRAINT {qi(c.name)} {c.definition}"
            if t.notnull:
                sql += " NOT NULL"
            return sql
        raise _Unsupported(f"type {t.qualified} is a {_TYPE_KINDS.get(t.kind, t.kind)} type, "
                           "which dbsage does not recreate")

    def recreate_type(self, t: Type) -> None:
        try:
            self.p.s3.append(self.type_sql(t))
        except _Unsupported as exc:
            self.out.refusals.append(str(exc))
            return
        name = qn(t.schema, t.name)
        kind = "DOMAIN" if t.kind == "d" else "TYPE"
        for c in t.constraints:
            if c.type == "c" and not c.validated:
                self.p.s7.append(f"ALTER DOMAIN {name} ADD CONSTRAINT {qi(c.name)} "
                                 f"{c.definition}")
        self.type_extras(t, name, kind, new=True)

    def type_extras(self, t: Type, name: str, kind: str, *, new: bool,
                    after: Type | None = None) -> None:
        if (new and t.owner != self.user) or (after is not None and after.owner != t.owner):
            self.p.s8.append(f"ALTER {kind} {name} OWNER TO {qi(t.owner)}")
        current = None if new or after is None else _owned_acl(after.acl, after.owner, t.owner)
        self.p.s8 += acl_statements(f"{kind} {name}", current, t.acl, t.owner,
                                    possible=self.grantees)
        if (new and t.comment) or (after is not None and after.comment != t.comment):
            self.p.s8.append(f"COMMENT ON {kind} {name} IS {ql(t.comment)}")
        for c in t.constraints:
            old = next((x for x in after.constraints if x.oid == c.oid), None) if after else None
            if c.comment and (new or old is None or old.comment != c.comment):
                self.p.s8.append(f"COMMENT ON CONSTRAINT {qi(c.name)} ON DOMAIN {name} IS "
                                 f"{ql(c.comment)}")

    def change_type(self, a: Type, b: Type) -> None:
        kind = "DOMAIN" if b.kind == "d" else "TYPE"
        if (a.schema_oid, a.name) != (b.schema_oid, b.name):
            cur = qn(a.schema, a.name)
            if a.schema_oid != b.schema_oid:
                self.p.s2.append(f"ALTER {kind} {cur} SET SCHEMA "
                                 f"{qi(self.schema_now(b.schema_oid, b.schema))}")
                cur = qn(b.schema, a.name)
            if a.name != b.name:
                self.p.s2.append(f"ALTER {kind} {cur} RENAME TO {qi(b.name)}")
        name = qn(b.schema, b.name)
        if b.kind == "e" and a.labels != b.labels:
            self.change_enum(a, b, name)
        elif b.kind == "c" and a.attributes != b.attributes:
            self.change_composite(a, b, name)
        elif b.kind == "d":
            self.change_domain(a, b, name)
        self.type_extras(b, name, kind, new=False, after=a)

    def change_enum(self, a: Type, b: Type, name: str) -> None:
        # Renamed labels keep their place: RENAME VALUE. Added ones need the type rebuilt.
        renamed: list[tuple[str, str]] = []
        if len(a.labels) == len(b.labels):
            renamed = [(x, y) for x, y in zip(a.labels, b.labels, strict=True) if x != y]
        if renamed and len(renamed) == sum(1 for x in a.labels if x not in b.labels):
            for x, y in renamed:
                self.p.s2.append(f"ALTER TYPE {name} RENAME VALUE {ql(x)} TO {ql(y)}")
            return
        added = [x for x in a.labels if x not in b.labels]
        if [x for x in a.labels if x in b.labels] != list(b.labels) or not added:
            self.out.refusals.append(f"enum {b.qualified} changed from {list(b.labels)} to "
                                     f"{list(a.labels)} in a way dbsage cannot reverse")
            return
        users = [u for u in b.users if u != ("type", b.oid)]  # the before capture has them
        blocking = []
        columns: list[tuple[Relation, Column]] = []
        for kind, oid in users:
            rel = (self.a.relations.get(oid) or self.b.relations.get(oid)) if kind == "rel" \
                else None
            if rel is None or rel.kind not in ("r", "p"):
                blocking.append(self._describe_user(kind, oid))
                continue
            for c in rel.columns:
                if c.type_oid in (b.oid, b.array_oid):
                    columns.append((rel, c))
        if blocking:
            self.out.refusals.append(
                f"ALTER TYPE {b.qualified} ADD VALUE {', '.join(ql(x) for x in added)} cannot be "
                f"undone: PostgreSQL cannot remove an enum value, and rebuilding the type is "
                f"blocked by {', '.join(blocking)}")
            return
        temp = f"{b.name}__dbsage_rb_{b.oid}"
        s6 = self.p.s6
        s6.append(f"ALTER TYPE {name} RENAME TO {qi(temp)}")
        s6.append(self.type_sql(b))
        for rel, c in columns:
            table = qn(rel.schema, rel.name)
            array = "[]" if c.type_oid == b.array_oid else ""
            if c.default is not None:
                s6.append(f"ALTER TABLE {table} ALTER COLUMN {qi(c.name)} DROP DEFAULT")
            s6.append(f"ALTER TABLE {table} ALTER COLUMN {qi(c.name)} TYPE {name}{array} "
                      f"USING {qi(c.name)}::text{array}::{name}{array}")
            before_col = next((x for x in self.b.relations.get(rel.oid, rel).columns
                               if x.num == c.num), c)
            if before_col.default is not None:
                s6.append(f"ALTER TABLE {table} ALTER COLUMN {qi(c.name)} SET DEFAULT "
                          f"{before_col.default}")
            self.out.guards.append(Guard(
                f"SELECT count(*) FROM {table} WHERE {qi(c.name)}::text{array} && "
                f"ARRAY[{', '.join(ql(x) for x in added)}]::text[]" if array else
                f"SELECT count(*) FROM {table} WHERE {qi(c.name)}::text IN "
                f"({', '.join(ql(x) for x in added)})",
                f"ALTER TYPE {b.qualified} ADD VALUE cannot be undone: {{rows}} row(s) of "
                f"{rel.qualified}.{c.name} use the value(s) {', '.join(added)}"))
        s6.append(f"DROP TYPE {qn(b.schema, temp)}")
        self.warn(f"enum {b.qualified} is rebuilt without {', '.join(added)} (PostgreSQL cannot "
                  f"drop an enum value): columns of that type are rewritten")

    def _describe_user(self, kind: str, oid: int) -> str:
        if kind == "rel":
            r = self.a.relations.get(oid)
            return f"{_REL_KIND.get(r.kind, 'relation').lower()} {r.qualified}" if r else \
                f"relation {oid}"
        if kind == "func":
            f = self.a.functions.get(oid)
            return f"function {f.qualified}" if f else f"function {oid}"
        if kind == "type":
            t = self.a.types.get(oid)
            return f"type {t.qualified}" if t else f"type {oid}"
        return f"{kind} {oid}"

    def change_composite(self, a: Type, b: Type, name: str) -> None:
        before = {c.num: c for c in b.attributes}
        after = {c.num: c for c in a.attributes}
        for num, c in after.items():
            if num not in before:
                self.p.s4.append(f"ALTER TYPE {name} DROP ATTRIBUTE {qi(c.name)}")
        for num, c in before.items():
            x = after.get(num)
            if x is None:
                self.p.s4.append(f"ALTER TYPE {name} ADD ATTRIBUTE {qi(c.name)} {c.type}"
                                 + (f" COLLATE {c.collation}" if c.collation else ""))
                continue
            if x.name != c.name:
                self.p.s2.append(f"ALTER TYPE {name} RENAME ATTRIBUTE {qi(x.name)} TO "
                                 f"{qi(c.name)}")
            if x.type != c.type or x.collation != c.collation:
                self.p.s4.append(f"ALTER TYPE {name} ALTER ATTRIBUTE {qi(c.name)} TYPE {c.type}"
                                 + (f" COLLATE {c.collation}" if c.collation else ""))
        order = [c.name for c in sorted(b.attributes, key=lambda c: c.num)]
        kept = [c.name for c in sorted(a.attributes, key=lambda c: c.num) if c.num in before]
        back = [c.name for c in sorted(b.attributes, key=lambda c: c.num) if c.num not in after]
        if kept + back != order:
            self.warn(f"attributes of {b.qualified} come back in another order "
                      f"({', '.join(kept + back)} instead of {', '.join(order)})")

    def change_domain(self, a: Type, b: Type, name: str) -> None:
        if a.default != b.default:
            self.p.s4.append(f"ALTER DOMAIN {name} " + (f"SET DEFAULT {b.default}"
                                                        if b.default is not None
                                                        else "DROP DEFAULT"))
        if a.notnull and not b.notnull:
            self.p.s4.append(f"ALTER DOMAIN {name} DROP NOT NULL")
        elif b.notnull and not a.notnull:
            self.p.s7.append(f"ALTER DOMAIN {name} SET NOT NULL")
        if a.base != b.base or a.collation != b.collation:
            self.out.refusals.append(f"domain {b.qualified} changed its base type")
        before = {c.oid: c for c in b.constraints}
        after = {c.oid: c for c in a.constraints}
        for oid, c in after.items():
            old = before.get(oid)
            if old is None or (old.definition, old.validated) != (c.definition, c.validated):
                self.p.s4.append(f"ALTER DOMAIN {name} DROP CONSTRAINT {qi(c.name)}")
            elif old.name != c.name:
                self.p.s2.append(f"ALTER DOMAIN {name} RENAME CONSTRAINT {qi(c.name)} TO "
                                 f"{qi(old.name)}")
        for oid, c in before.items():
            new = after.get(oid)
            if new is None or (new.definition, new.validated) != (c.definition, c.validated):
                self.p.s7.append(f"ALTER DOMAIN {name} ADD CONSTRAINT {qi(c.name)} "
                                 f"{c.definition}")

    # --- functions --------------------------------------------------------------------------

    def functions(self) -> None:
        b_sigs = {(f.schema, f.name, f.args) for f in self.b.functions.values()}
        created = [f for oid, f in self.a.functions.items() if oid not in self.b.functions
                   and self.new(oid) and not f.extension]
        for f in sorted(created, key=lambda f: -f.oid):
            kind = _FUNC_KIND.get(f.kind, "FUNCTION")
            name = f"{qn(f.schema, f.name)}({f.args})"
            if (f.schema, f.name, f.args) in b_sigs:
                temp = f"{f.name}__dbsage_rb_{f.oid}"
                self.p.s1.append(f"ALTER {kind} {name} RENAME TO {qi(temp)}")
                name = f"{qn(f.schema, temp)}({f.args})"
            self.p.s5.append(f"DROP {kind} {self._moved(name, f.schema_oid, f.schema)}")
            self.out.absent.append(("function", f.schema, f.name, f.args))
        for oid, f in sorted(self.b.functions.items()):
            if f.extension:
                continue
            after = self.a.functions.get(oid)
            if f.definition is None:
                if after is None or after != f:
                    self.out.refusals.append(f"{_FUNC_KIND.get(f.kind, 'function').lower()} "
                                             f"{f.qualified} changed; dbsage does not recreate "
                                             "aggregates")
                continue
            if after is None:
                self.p.s3.append(f.definition.rstrip().rstrip(";"))
                self.function_extras(f, None)
                continue
            kind = _FUNC_KIND.get(f.kind, "FUNCTION")
            if (after.schema_oid, after.name) != (f.schema_oid, f.name):
                cur = f"{qn(after.schema, after.name)}({after.args})"
                if after.schema_oid != f.schema_oid:
                    self.p.s2.append(f"ALTER {kind} {cur} SET SCHEMA "
                                     f"{qi(self.schema_now(f.schema_oid, f.schema))}")
                    cur = f"{qn(f.schema, after.name)}({after.args})"
                if after.name != f.name:
                    self.p.s2.append(f"ALTER {kind} {cur} RENAME TO {qi(f.name)}")
            if _body(after.definition, after) != _body(f.definition, f):
                self.p.s6.append(f.definition.rstrip().rstrip(";"))
            self.function_extras(f, after)

    def function_extras(self, f: Function, after: Function | None) -> None:
        kind = _FUNC_KIND.get(f.kind, "FUNCTION")
        name = f"{kind} {qn(f.schema, f.name)}({f.args})"
        if after is None:
            if f.owner != self.user:
                self.p.s8.append(f"ALTER {name} OWNER TO {qi(f.owner)}")
            self.p.s8 += acl_statements(name, None, f.acl, f.owner, possible=self.grantees)
            if f.comment:
                self.p.s8.append(f"COMMENT ON {name} IS {ql(f.comment)}")
            return
        if after.owner != f.owner:
            self.p.s8.append(f"ALTER {name} OWNER TO {qi(f.owner)}")
        self.p.s8 += acl_statements(name, _owned_acl(after.acl, after.owner, f.owner), f.acl,
                                    f.owner)
        if after.comment != f.comment:
            self.p.s8.append(f"COMMENT ON {name} IS {ql(f.comment)}")

    # --- relations --------------------------------------------------------------------------

    def relations(self) -> None:
        b, a = self.b.relations, self.a.relations
        created = [r for oid, r in a.items() if oid not in b and self.new(oid)
                   and not r.extension]
        created_oids = {r.oid for r in created}
        dropped = [r for oid, r in b.items() if oid not in a and not r.extension]
        kept = [(a[oid], r) for oid, r in b.items() if oid in a and not r.extension]
        # Views the migration changed come back by drop and create (their dependents with them).
        rebuilt = {br.oid for ar, br in kept if br.kind in ("v", "m") and _view_changed(ar, br)}
        rebuilt |= self._dependent_views(rebuilt, kept)
        # 1. additions to tables that stay, then created and rebuilt views, then created tables
        for ar, br in kept:
            self.drop_additions(ar, br)
        for r in self._order_drop([x for x in created if x.kind in ("v", "m")]
                                  + [ar for ar, br in kept if br.oid in rebuilt]):
            self.p.s1.append(f"DROP {_REL_KIND[r.kind]} {self.rel_after(r)}")
        for r in self._order_drop([x for x in created if x.kind in ("r", "p", "f")]):
            self.p.s1.append(f"DROP {_REL_KIND[r.kind]} {self.rel_after(r)}")
        owned_by_created = {r.oid for r in created if r.kind == "S" and r.sequence is not None
                            and r.sequence.owner_table in created_oids}
        for r in sorted((x for x in created if x.kind == "S" and x.oid not in owned_by_created),
                        key=lambda x: -x.oid):
            if r.sequence is not None and r.sequence.owner_kind == "i":
                continue  # an identity column's: goes with its column
            self.p.s5.append(f"DROP SEQUENCE {self.rel_created_now(r)}")
        for r in created:
            self.out.absent.append(("relation", r.schema, r.name))
        # 2.-4. tables that stay
        for ar, br in kept:
            self.rename_back(ar, br)
        for ar, br in kept:
            if br.oid in rebuilt:
                continue
            self.change_relation(ar, br)
        # 3./6. what was dropped, and the rebuilt views, in dependency order
        for r in self._order_create([x for x in dropped] + [br for _, br in kept
                                                            if br.oid in rebuilt]):
            self.recreate(r, dropped=r.oid not in rebuilt)
        for ar, br in kept:
            if br.oid not in rebuilt:
                self.restore_parts(ar, br)

    def _dependent_views(self, rebuilt: set[int], kept: list[tuple[Relation, Relation]]
                         ) -> set[int]:
        out: set[int] = set()
        changed = True
        while changed:
            changed = False
            for _ar, br in kept:
                if br.kind in ("v", "m") and br.oid not in rebuilt | out and \
                        any(k == "rel" and o in rebuilt | out for k, o in br.deps):
                    out.add(br.oid)
                    changed = True
        return out

    def _order_drop(self, rels: list[Relation]) -> list[Relation]:
        """Dependents first (reverse dependency order; newest first among equals)."""
        return list(reversed(self._topo(rels, lambda r: r.deps)))

    def _order_create(self, rels: list[Relation]) -> list[Relation]:
        return self._topo(rels, lambda r: r.deps)

    def _topo(self, rels: list[Relation],
              deps: Callable[[Relation], Iterable[tuple[str, int]]]) -> list[Relation]:
        by_oid = {r.oid: r for r in rels}
        done: set[int] = set()
        out: list[Relation] = []

        def visit(r: Relation, path: set[int]) -> None:
            if r.oid in done or r.oid in path:
                return
            path.add(r.oid)
            for kind, oid in sorted(deps(r)):
                if kind == "rel" and oid in by_oid:
                    visit(by_oid[oid], path)
            done.add(r.oid)
            out.append(r)

        for r in sorted(rels, key=lambda r: r.oid):
            visit(r, set())
        return out

    def drop_additions(self, a: Relation, b: Relation) -> None:
        """Triggers, policies, constraints, indexes and publication membership the migration
        added to (or changed on) a relation that stays: dropped first (by their after-names)."""
        table = self.rel_after(a)
        bt = {t.oid: t for t in b.triggers}
        for t in a.triggers:
            old = bt.get(t.oid)
            if old is None or _trigger_body(old) != _trigger_body(t):
                self.p.s1.append(f"DROP TRIGGER {qi(t.name)} ON {table}")
        bp = {p.oid: p for p in b.policies}
        for p in a.policies:
            old = bp.get(p.oid)
            if old is None or _policy_body(old) != _policy_body(p):
                self.p.s1.append(f"DROP POLICY {qi(p.name)} ON {table}")
        bc = {c.oid: c for c in b.constraints}
        for c in a.constraints:
            old = bc.get(c.oid)
            if c.inherited:
                continue
            if old is None or (old.definition, old.validated) != (c.definition, c.validated):
                self.p.s1.append(f"ALTER TABLE {table} DROP CONSTRAINT {qi(c.name)}")
        bi = {i.oid: i for i in b.indexes}
        for i in a.indexes:
            old = bi.get(i.oid)
            if old is None or _index_body(old) != _index_body(i):
                self.p.s1.append(f"DROP INDEX {qn(a.schema, i.name)}")
        bm = {m.publication: m for m in b.publications}
        for m in a.publications:
            if bm.get(m.publication) != m:
                self.p.s1.append(f"ALTER PUBLICATION {qi(m.publication)} DROP TABLE {table}")

    def rename_back(self, a: Relation, b: Relation) -> None:
        kind = _REL_KIND[b.kind]
        cur_schema, cur_name = a.schema, a.name
        if a.schema_oid != b.schema_oid:
            self.p.s2.append(f"ALTER {kind} {qn(cur_schema, cur_name)} SET SCHEMA "
                             f"{qi(self.schema_now(b.schema_oid, b.schema))}")
            cur_schema = b.schema
        elif self.schema_now(a.schema_oid, a.schema) != a.schema:
            cur_schema = b.schema  # the schema itself is renamed back first
        if cur_name != b.name:
            self.p.s2.append(f"ALTER {kind} {qn(cur_schema, cur_name)} RENAME TO {qi(b.name)}")
        table = qn(b.schema, b.name)
        acols = {c.num: c for c in a.columns}
        for c in b.columns:
            x = acols.get(c.num)
            if x is not None and x.name != c.name:
                self.p.s2.append(f"ALTER {kind} {table} RENAME COLUMN {qi(x.name)} TO "
                                 f"{qi(c.name)}")
        bc = {c.oid: c for c in b.constraints}
        for c in a.constraints:
            old = bc.get(c.oid)
            if old is not None and old.name != c.name and \
                    (old.definition, old.validated) == (c.definition, c.validated):
                self.p.s2.append(f"ALTER TABLE {table} RENAME CONSTRAINT {qi(c.name)} TO "
                                 f"{qi(old.name)}")
        bi = {i.oid: i for i in b.indexes}
        for i in a.indexes:
            old = bi.get(i.oid)
            if old is not None and old.name != i.name and _index_body(old) == _index_body(i):
                self.p.s2.append(f"ALTER INDEX {qn(b.schema, i.name)} RENAME TO {qi(old.name)}")
        bt = {t.oid: t for t in b.triggers}
        for t in a.triggers:
            old = bt.get(t.oid)
            if old is not None and old.name != t.name and _trigger_body(old) == _trigger_body(t):
                self.p.s2.append(f"ALTER TRIGGER {qi(t.name)} ON {table} RENAME TO "
                                 f"{qi(old.name)}")
        bp = {p.oid: p for p in b.policies}
        for p in a.policies:
            old = bp.get(p.oid)
            if old is not None and old.name != p.name and _policy_body(old) == _policy_body(p):
                self.p.s2.append(f"ALTER POLICY {qi(p.name)} ON {table} RENAME TO "
                                 f"{qi(old.name)}")

    def change_relation(self, a: Relation, b: Relation) -> None:
        """Columns and table-level settings of a relation that stays."""
        table = qn(b.schema, b.name)
        kind = _REL_KIND[b.kind]
        if b.kind in ("r", "p", "f"):
            self.change_columns(a, b, table)
        if a.persistence != b.persistence and b.kind in ("r", "p", "S"):
            self.p.s4.append(f"ALTER {kind} {table} SET "
                             f"{'UNLOGGED' if b.persistence == 'u' else 'LOGGED'}")
        if a.options != b.options:
            self._options(kind, table, a.options, b.options)
        if a.rls != b.rls:
            self.p.s4.append(f"ALTER TABLE {table} "
                             f"{'ENABLE' if b.rls else 'DISABLE'} ROW LEVEL SECURITY")
        if a.force_rls != b.force_rls:
            self.p.s4.append(f"ALTER TABLE {table} {'' if b.force_rls else 'NO '}FORCE ROW LEVEL "
                             "SECURITY")
        if (a.partition_bound, a.partition_key, a.parents) != \
                (b.partition_bound, b.partition_key, b.parents):
            self.out.refusals.append(f"{b.qualified}: partitioning or inheritance changed, which "
                                     "dbsage does not reverse")
        if b.kind == "S" and b.sequence is not None and a.sequence is not None:
            self.change_sequence(a, b, table)

    def _options(self, kind: str, table: str, cur: tuple[str, ...], tgt: tuple[str, ...]
                 ) -> None:
        cur_k = {o.split("=", 1)[0]: o for o in cur}
        tgt_k = {o.split("=", 1)[0]: o for o in tgt}
        reset = [k for k in cur_k if k not in tgt_k]
        set_ = [tgt_k[k] for k in tgt_k if cur_k.get(k) != tgt_k[k]]
        if reset:
            self.p.s4.append(f"ALTER {kind} {table} RESET ({', '.join(reset)})")
        if set_:
            self.p.s4.append(f"ALTER {kind} {table} SET ({', '.join(_option(o) for o in set_)})")

    def change_columns(self, a: Relation, b: Relation, table: str) -> None:
        acols = {c.num: c for c in a.columns}
        bcols = {c.num: c for c in b.columns}
        for num, c in acols.items():
            if num not in bcols:
                self.p.s4.append(f"ALTER TABLE {table} DROP COLUMN {qi(c.name)}")
        for num, c in bcols.items():
            x = acols.get(num)
            col = f"ALTER TABLE {table} ALTER COLUMN {qi(c.name)}"
            if x is None:
                self.add_column(b, c, table)
                continue
            if (x.identity, c.identity) != ("", "") and x.identity != c.identity:
                if c.identity == "":
                    self.p.s4.append(f"{col} DROP IDENTITY")
                elif x.identity == "":
                    self.p.s4.append(f"{col} ADD {self.identity_clause(b, c)}")
                else:
                    self.p.s4.append(f"{col} SET GENERATED "
                                     f"{'ALWAYS' if c.identity == 'a' else 'BY DEFAULT'}")
            if x.generated != c.generated or (c.generated and x.default != c.default):
                self.out.refusals.append(f"the generated expression of {b.qualified}.{c.name} "
                                         "changed, which dbsage does not reverse")
                continue
            if x.type != c.type or x.collation != c.collation:
                if x.default is not None and not c.generated:
                    self.p.s4.append(f"{col} DROP DEFAULT")
                coll = f" COLLATE {c.collation}" if c.collation else ""
                self.p.s4.append(f"{col} TYPE {c.type}{coll} USING {qi(c.name)}::{c.type}")
                if c.default is not None and not c.generated:
                    self.p.s4.append(f"{col} SET DEFAULT {c.default}")
            elif x.default != c.default and not c.generated and not c.identity:
                self.p.s4.append(f"{col} " + (f"SET DEFAULT {c.default}" if c.default is not None
                                              else "DROP DEFAULT"))
            if x.notnull and not c.notnull:
                self.p.s4.append(f"{col} DROP NOT NULL")
            elif c.notnull and not x.notnull:
                self.p.s7.append(self.not_null(table, c, b))
            elif c.notnull and x.notnull and x.notnull_name != c.notnull_name and \
                    c.notnull_name and x.notnull_name:
                self.p.s2.append(f"ALTER TABLE {table} RENAME CONSTRAINT {qi(x.notnull_name)} "
                                 f"TO {qi(c.notnull_name)}")
            if x.storage != c.storage:
                self.p.s4.append(f"{col} SET STORAGE {_STORAGE[c.storage or _DEFAULT_STORAGE]}")
        self._column_order(a, b)

    def add_column(self, rel: Relation, c: Column, table: str) -> None:
        sql = f"ALTER TABLE {table} ADD COLUMN {qi(c.name)} {c.type}"
        if c.collation:
            sql += f" COLLATE {c.collation}"
        if c.generated:
            sql += f" GENERATED ALWAYS AS ({c.default}) " + \
                ("STORED" if c.generated == "s" else "VIRTUAL")
        elif c.identity:
            sql += " " + self.identity_clause(rel, c)
        elif c.default is not None:
            sql += f" DEFAULT {c.default}"
        if c.notnull and (c.default is not None or c.identity) and not c.generated:
            sql += _inline_not_null(rel, c)
            self.p.s4.append(sql)
        else:
            self.p.s4.append(sql)
            if c.notnull:
                self.p.s7.append(self.not_null(table, c, rel))
        if c.storage:
            self.p.s4.append(f"ALTER TABLE {table} ALTER COLUMN {qi(c.name)} SET STORAGE "
                             f"{_STORAGE[c.storage]}")

    def not_null(self, table: str, c: Column, rel: Relation | None = None) -> str:
        """SET NOT NULL; on PostgreSQL 18 with the constraint's own name when it is not the
        one PostgreSQL would choose."""
        default = f"{rel.name}_{c.name}_not_null" if rel is not None else None
        if c.notnull_name and c.notnull_name != default:
            return f"ALTER TABLE {table} ADD CONSTRAINT {qi(c.notnull_name)} NOT NULL {qi(c.name)}"
        return f"ALTER TABLE {table} ALTER COLUMN {qi(c.name)} SET NOT NULL"

    def identity_clause(self, rel: Relation, c: Column) -> str:
        seq = next((r for r in self.b.relations.values() if r.sequence is not None
                    and r.sequence.owner_table == rel.oid and r.sequence.owner_column == c.name
                    and r.sequence.owner_kind == "i"), None)
        how = "ALWAYS" if c.identity == "a" else "BY DEFAULT"
        if seq is None or seq.sequence is None:
            return f"GENERATED {how} AS IDENTITY"
        return f"GENERATED {how} AS IDENTITY ({_seq_options(seq, named=True)})"

    def _column_order(self, a: Relation, b: Relation) -> None:
        acols = {c.num for c in a.columns}
        result = [c.name for c in sorted(b.columns, key=lambda c: c.num) if c.num in acols] + \
            [c.name for c in sorted(b.columns, key=lambda c: c.num) if c.num not in acols]
        order = [c.name for c in sorted(b.columns, key=lambda c: c.num)]
        for i, name in enumerate(order):
            if result[i] != name and name not in [c.name for c in a.columns]:
                self.warn(f"column {b.name}.{name} comes back as the last column (it was column "
                          f"{i + 1} of {len(order)}): PostgreSQL cannot insert a column in the "
                          "middle, so the schema differs in column order only.")

    def change_sequence(self, a: Relation, b: Relation, table: str) -> None:
        sa, sb = a.sequence, b.sequence
        assert sa is not None and sb is not None
        if _seq_options(a) != _seq_options(b):
            self.p.s4.append(f"ALTER SEQUENCE {table} {_seq_options(b, restart=False)}")
        self.sequence_value(b, table, sa.last_value)

    def sequence_value(self, b: Relation, table: str, now: int | None) -> None:
        sb = b.sequence
        if sb is None or not sb.readable or sb.last_value == now:
            return
        target = (sb.last_value, "true") if sb.last_value is not None else (sb.start, "false")
        guard = (f"pg_catalog.pg_sequence_last_value({ql(table)}::regclass) "
                 + ("IS NULL" if now is None else f"= {now}"))
        self.p.s8.append(f"SELECT pg_catalog.setval({ql(table)}::regclass, {target[0]}, "
                         f"{target[1]}) WHERE {guard}")

    def recreate(self, r: Relation, *, dropped: bool) -> None:
        name = qn(r.schema, r.name)
        kind = _REL_KIND[r.kind]
        if r.kind in ("v", "m"):
            opts = f" WITH ({', '.join(_option(o) for o in r.options)})" if r.options else ""
            body = (r.viewdef or "").rstrip().rstrip(";")
            if r.kind == "v":
                self.p.s6.append(f"CREATE VIEW {name}{opts} AS\n{body}")
            else:
                data = "" if r.populated else " WITH NO DATA"
                self.p.s6.append(f"CREATE MATERIALIZED VIEW {name}{opts} AS\n{body}{data}")
            for i in r.indexes:
                self.p.s7.append(i.definition)
        elif r.kind == "S":
            if r.sequence is not None and r.sequence.owner_kind == "i":
                return  # comes back with its identity column
            self.p.s3.append(f"CREATE {'UNLOGGED ' if r.persistence == 'u' else ''}SEQUENCE "
                             f"{name} {_seq_options(r, restart=False)}")
            seq = r.sequence
            if seq is not None and seq.owner_table:
                owner = self.b.relations.get(seq.owner_table)
                if owner is not None:
                    self.p.s7.append(f"ALTER SEQUENCE {name} OWNED BY "
                                     f"{qn(owner.schema, owner.name)}.{qi(seq.owner_column or '')}")
            self.sequence_value(r, name, None)
        elif r.kind in ("r", "p"):
            self.create_table(r, name)
        else:
            self.out.refusals.append(f"{_REL_KIND.get(r.kind, r.kind).lower()} {r.qualified} was "
                                     "dropped; dbsage does not recreate it")
            return
        if r.rls:
            self.p.s6.append(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
        if r.force_rls:
            self.p.s6.append(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
        if r.owner != self.user:
            self.p.s8.append(f"ALTER {kind} {name} OWNER TO {qi(r.owner)}")
        on = f"{_grant_kind(r.kind)} {name}"
        self.p.s8 += acl_statements(on, None, r.acl, r.owner, possible=self.grantees)
        for c in r.columns:
            if c.acl:
                self.p.s8 += acl_statements(on, [], c.acl, r.owner, columns=qi(c.name))
        if r.comment:
            self.p.s8.append(f"COMMENT ON {kind} {name} IS {ql(r.comment)}")
        for c in r.columns:
            if c.comment:
                self.p.s8.append(f"COMMENT ON COLUMN {name}.{qi(c.name)} IS {ql(c.comment)}")
        if r.kind in ("r", "p"):
            for con in r.constraints:
                if con.type not in ("p", "u") and not con.inherited:
                    self.p.s7.append(f"ALTER TABLE {name} ADD CONSTRAINT {qi(con.name)} "
                                     f"{con.definition}")
                if con.comment:
                    self.p.s8.append(f"COMMENT ON CONSTRAINT {qi(con.name)} ON {name} IS "
                                     f"{ql(con.comment)}")
            for i in r.indexes:
                self.p.s7.append(i.definition)
                if i.comment:
                    self.p.s8.append(f"COMMENT ON INDEX {qn(r.schema, i.name)} IS "
                                     f"{ql(i.comment)}")
                if i.clustered:
                    self.p.s7.append(f"ALTER TABLE {name} CLUSTER ON {qi(i.name)}")
            if r.replident not in ("d",):
                self.p.s7.append(f"ALTER TABLE {name} REPLICA IDENTITY {_replident(r)}")
            for t in r.triggers:
                self.p.s7.append(t.definition)
                if t.enabled != "O":
                    self.p.s7.append(_trigger_enable(name, t.name, t.enabled))
                if t.comment:
                    self.p.s8.append(f"COMMENT ON TRIGGER {qi(t.name)} ON {name} IS "
                                     f"{ql(t.comment)}")
        for p in r.policies:
            self.p.s7.append(_policy_sql(name, p))
            if p.comment:
                self.p.s8.append(f"COMMENT ON POLICY {qi(p.name)} ON {name} IS {ql(p.comment)}")
        for m in r.publications:
            self.p.s8.append(f"ALTER PUBLICATION {qi(m.publication)} ADD TABLE "
                             f"{_pub_table(r.schema, r.name, m.columns, m.where)}")
        del dropped

    def create_table(self, r: Relation, name: str) -> None:
        parts = []
        for c in r.columns:
            sql = f"{qi(c.name)} {c.type}"
            if c.collation:
                sql += f" COLLATE {c.collation}"
            if c.generated:
                sql += f" GENERATED ALWAYS AS ({c.default}) " + \
                    ("STORED" if c.generated == "s" else "VIRTUAL")
            elif c.identity:
                sql += " " + self.identity_clause(r, c)
            elif c.default is not None:
                sql += f" DEFAULT {c.default}"
            if c.notnull:
                sql += _inline_not_null(r, c)
            parts.append(sql)
        for con in r.constraints:
            if con.type in ("p", "u") and not con.inherited:
                parts.append(f"CONSTRAINT {qi(con.name)} {con.definition}")
        opts = f" WITH ({', '.join(_option(o) for o in r.options)})" if r.options else ""
        unlogged = "UNLOGGED " if r.persistence == "u" else ""
        if r.partition_bound or r.parents:
            self.out.refusals.append(f"table {r.qualified} was a partition or had parents; "
                                     "dbsage does not recreate those")
            return
        part = f" PARTITION BY {r.partition_key}" if r.partition_key else ""
        body = ",\n    ".join(parts)
        self.p.s6.append(f"CREATE {unlogged}TABLE {name} (\n    {body}\n){part}{opts}")
        for c in r.columns:
            if c.storage:
                self.p.s6.append(f"ALTER TABLE {name} ALTER COLUMN {qi(c.name)} SET STORAGE "
                                 f"{_STORAGE[c.storage]}")
        for seq in self.b.relations.values():
            s = seq.sequence
            if s is not None and s.owner_table == r.oid and s.owner_kind == "i":
                self.sequence_value(seq, qn(seq.schema, seq.name), None)
                if seq.acl != ():
                    self.p.s8 += acl_statements(f"SEQUENCE {qn(seq.schema, seq.name)}", None,
                                                seq.acl, seq.owner, possible=self.grantees)
                if seq.comment:
                    self.p.s8.append(f"COMMENT ON SEQUENCE {qn(seq.schema, seq.name)} IS "
                                     f"{ql(seq.comment)}")

    def restore_parts(self, a: Relation, b: Relation) -> None:
        """What the migration dropped or changed on a relation that stays, after the data:
        constraints, indexes, triggers, policies, publication membership, owner, privileges,
        comments, replica identity."""
        table = qn(b.schema, b.name)
        kind = _REL_KIND[b.kind]
        ac = {c.oid: c for c in a.constraints}
        for c in b.constraints:
            x = ac.get(c.oid)
            if c.inherited:
                continue
            if x is None or (x.definition, x.validated) != (c.definition, c.validated):
                self.p.s7.append(f"ALTER TABLE {table} ADD CONSTRAINT {qi(c.name)} "
                                 f"{c.definition}")
                if c.comment:
                    self.p.s8.append(f"COMMENT ON CONSTRAINT {qi(c.name)} ON {table} IS "
                                     f"{ql(c.comment)}")
            elif x.comment != c.comment:
                self.p.s8.append(f"COMMENT ON CONSTRAINT {qi(c.name)} ON {table} IS "
                                 f"{ql(c.comment)}")
        ai = {i.oid: i for i in a.indexes}
        for i in b.indexes:
            x = ai.get(i.oid)
            if x is None or _index_body(x) != _index_body(i):
                self.p.s7.append(i.definition)
                if i.comment:
                    self.p.s8.append(f"COMMENT ON INDEX {qn(b.schema, i.name)} IS "
                                     f"{ql(i.comment)}")
                if i.clustered:
                    self.p.s7.append(f"ALTER TABLE {table} CLUSTER ON {qi(i.name)}")
            elif x.comment != i.comment:
                self.p.s8.append(f"COMMENT ON INDEX {qn(b.schema, i.name)} IS {ql(i.comment)}")
        if (a.replident, a.replident_index) != (b.replident, b.replident_index):
            self.p.s7.append(f"ALTER TABLE {table} REPLICA IDENTITY {_replident(b)}")
        at = {t.oid: t for t in a.triggers}
        for t in b.triggers:
            x = at.get(t.oid)
            if x is None or _trigger_body(x) != _trigger_body(t):
                self.p.s7.append(t.definition)
                if t.enabled != "O":
                    self.p.s7.append(_trigger_enable(table, t.name, t.enabled))
                if t.comment:
                    self.p.s8.append(f"COMMENT ON TRIGGER {qi(t.name)} ON {table} IS "
                                     f"{ql(t.comment)}")
                continue
            if x.enabled != t.enabled:
                self.p.s7.append(_trigger_enable(table, t.name, t.enabled))
            if x.comment != t.comment:
                self.p.s8.append(f"COMMENT ON TRIGGER {qi(t.name)} ON {table} IS "
                                 f"{ql(t.comment)}")
        ap = {p.oid: p for p in a.policies}
        for p in b.policies:
            x = ap.get(p.oid)
            if x is None or _policy_body(x) != _policy_body(p):
                self.p.s7.append(_policy_sql(table, p))
                if p.comment:
                    self.p.s8.append(f"COMMENT ON POLICY {qi(p.name)} ON {table} IS "
                                     f"{ql(p.comment)}")
            elif x.comment != p.comment:
                self.p.s8.append(f"COMMENT ON POLICY {qi(p.name)} ON {table} IS {ql(p.comment)}")
        am = {m.publication: m for m in a.publications}
        for m in b.publications:
            if am.get(m.publication) != m:
                self.p.s8.append(f"ALTER PUBLICATION {qi(m.publication)} ADD TABLE "
                                 f"{_pub_table(b.schema, b.name, m.columns, m.where)}")
        if a.owner != b.owner:
            self.p.s8.append(f"ALTER {kind} {table} OWNER TO {qi(b.owner)}")
        on = f"{_grant_kind(b.kind)} {table}"
        self.p.s8 += acl_statements(on, _owned_acl(a.acl, a.owner, b.owner), b.acl, b.owner)
        acols = {c.num: c for c in a.columns}
        for c in b.columns:
            x = acols.get(c.num)
            if x is None:
                if c.acl:
                    self.p.s8 += acl_statements(on, [], c.acl, b.owner, columns=qi(c.name))
                if c.comment:
                    self.p.s8.append(f"COMMENT ON COLUMN {table}.{qi(c.name)} IS "
                                     f"{ql(c.comment)}")
                continue
            if (x.acl or ()) != (c.acl or ()):
                self.p.s8 += acl_statements(on, list(x.acl or ()),
                                            list(c.acl or ()), b.owner, columns=qi(c.name))
            if x.comment != c.comment:
                self.p.s8.append(f"COMMENT ON COLUMN {table}.{qi(c.name)} IS {ql(c.comment)}")
        if a.comment != b.comment:
            self.p.s8.append(f"COMMENT ON {kind} {table} IS {ql(b.comment)}")
        if b.kind == "S" and b.sequence is not None:
            pass  # values: change_sequence

    def warn(self, text: str) -> None:
        if text not in self.out.warnings:
            self.out.warnings.append(text)


class _Unsupported(Exception):
    pass


_TYPE_KINDS = {"r": "range", "b": "base", "m": "multirange", "p": "pseudo"}
_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
_DEFAULT_STORAGE = "x"


def _grant_kind(relkind: str) -> str:
    """How GRANT names a relation of this kind (views and the like are TABLEs to it)."""
    return "SEQUENCE" if relkind == "S" else "TABLE"


def _owned_acl(acl: Sequence[str], old_owner: str, new_owner: str) -> list[str]:
    """The ACL as it reads once ALTER ... OWNER TO new_owner ran (PostgreSQL rewrites the old
    owner's entries)."""
    if old_owner == new_owner:
        return list(acl)
    out = []
    for item in parse_acl(acl):
        grantee = new_owner if item.grantee == old_owner else item.grantee
        grantor = new_owner if item.grantor == old_owner else item.grantor
        out.append(f"{_acl_name(grantee)}={item.privileges}/{_acl_name(grantor)}")
    return out


def _acl_name(name: str) -> str:
    if name == "" or re.match(r"^[A-Za-z0-9_]+$", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _option(text: str) -> str:
    key, _, value = text.partition("=")
    if re.match(r"^[A-Za-z0-9_.]+$", value):
        return f"{key}={value}"
    return f"{key}={ql(value)}"


def _inline_not_null(rel: Relation, c: Column) -> str:
    default = f"{rel.name}_{c.name}_not_null"
    if c.notnull_name and c.notnull_name != default:
        return f" CONSTRAINT {qi(c.notnull_name)} NOT NULL"
    return " NOT NULL"


def _replident(r: Relation) -> str:
    if r.replident == "f":
        return "FULL"
    if r.replident == "n":
        return "NOTHING"
    if r.replident == "i" and r.replident_index:
        return f"USING INDEX {qi(r.replident_index)}"
    return "DEFAULT"


def _seq_options(r: Relation, *, named: bool = False, restart: bool = False) -> str:
    s = r.sequence
    assert s is not None
    parts = []
    if named:  # an identity column's: its type is the column's
        parts.append(f"SEQUENCE NAME {qn(r.schema, r.name)}")
    else:
        parts.append(f"AS {s.type}")
    parts += [f"INCREMENT BY {s.increment}", f"MINVALUE {s.min}", f"MAXVALUE {s.max}",
              f"START WITH {s.start}", f"CACHE {s.cache}", "CYCLE" if s.cycle else "NO CYCLE"]
    del restart
    return " ".join(parts)


def _view_changed(a: Relation, b: Relation) -> bool:
    return (a.viewdef, a.options, [(c.name, c.type) for c in a.columns], a.populated) != \
        (b.viewdef, b.options, [(c.name, c.type) for c in b.columns], b.populated)


def _trigger_body(t: object) -> str:
    definition = getattr(t, "definition", "")
    name = getattr(t, "name", "")
    return definition.replace(f"TRIGGER {qi(name)} ", "TRIGGER ? ", 1)


def _policy_body(p: Policy) -> tuple[object, ...]:
    return (p.permissive, p.cmd, p.roles, p.qual, p.check)


def _index_body(i: object) -> str:
    definition = getattr(i, "definition", "")
    name = getattr(i, "name", "")
    return definition.replace(f"INDEX {qi(name)} ", "INDEX ? ", 1)


def _body(definition: str | None, f: Function) -> str:
    """A function definition without its own name (a rename is not a body change)."""
    text = definition or ""
    return text.replace(f"{qn(f.schema, f.name)}(", "?(", 1)


_CMD = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


def _policy_sql(table: str, p: Policy) -> str:
    sql = f"CREATE POLICY {qi(p.name)} ON {table}"
    if not p.permissive:
        sql += " AS RESTRICTIVE"
    sql += f" FOR {_CMD.get(p.cmd, 'ALL')}"
    if p.roles and p.roles != ("public",):
        sql += " TO " + ", ".join(p.roles)
    if p.qual is not None:
        sql += f" USING ({p.qual})"
    if p.check is not None:
        sql += f" WITH CHECK ({p.check})"
    return sql


def _trigger_enable(table: str, name: str, enabled: str) -> str:
    how = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}[enabled]
    return f"ALTER TABLE {table} {how} TRIGGER {qi(name)}"


def _pub_table(schema: str, name: str, columns: tuple[str, ...] | None,
               where: str | None) -> str:
    sql = f"ONLY {qn(schema, name)}"
    if columns is not None:
        sql += f" ({', '.join(qi(c) for c in columns)})"
    if where is not None:
        sql += f" WHERE ({where})"
    return sql


def _pub_options(p: Publication) -> str:
    actions = [name for name, on in (("insert", p.insert), ("update", p.update),
                                     ("delete", p.delete), ("truncate", p.truncate)) if on]
    return f"publish = {ql(', '.join(actions))}, publish_via_partition_root = " \
        f"{'true' if p.via_root else 'false'}"


def derive(before: CatalogState, after: CatalogState, *, unseen: Iterable[str] = (),
           other: Iterable[str] = ()) -> Derived:
    """The reverse script from `after` back to `before` (both captures of one transaction)."""
    return _Deriver(before, after).run(unseen, other)
