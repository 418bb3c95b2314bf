"""The catalog state of what a migration touches, read on the migration's own connection.

A rollback needs to know, for every object the migration changes, what it was before and what
it became. dbsage reads that inside the migration's transaction, before its first statement
(`capture` of the objects the statements name, `Scope`) and after its last (the same objects
by OID, plus every catalog row the transaction itself wrote: `touched`, found by xmin), with
its own catalog queries scoped to those OIDs. Nothing is restored anywhere and nothing needs a
privilege the migration did not have: every query reads the system catalogs (which every role
may read) and the pg_get_*def functions, as pg_dump does.

Why not `results`' inspector (as the dry-run uses): it reads every object of the database
(seconds at 1,000 tables, twice per apply) and cannot be scoped; it also cannot see renames,
publication membership, sequence values or the order of ACL entries, all of which a faithful
rollback needs.

The state is plain frozen dataclasses, keyed by OID while the transaction lasts (renames keep
an OID, so before/after pairs are exact) and compared by name afterwards (`differences`: a
rolled-back object has a new OID). `to_json`/`from_json` keep it in dbsage.rollback_plan.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbsage.tools.catalog import user_schemas_sql
from dbsage.tools.sqlfile import walk

if TYPE_CHECKING:
    import psycopg

    from dbsage.tools.sqlfile import MigrationFile

# ---------------------------------------------------------------------------------------------
# The state
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    num: int
    name: str
    type: str  # format_type()
    notnull: bool
    default: str | None = None
    identity: str = ""  # '', 'a' (always), 'd' (by default)
    generated: str = ""  # '', 's' (stored), 'v' (virtual, PostgreSQL 18)
    collation: str | None = None  # only when it is not the type's own
    acl: tuple[str, ...] | None = None
    comment: str | None = None
    storage: str | None = None  # only when it is not the type's default
    notnull_name: str | None = None  # PostgreSQL 18 keeps NOT NULL as a named constraint
    type_oid: int = 0


@dataclass(frozen=True)
class Constraint:
    oid: int
    name: str
    type: str  # p, u, c, f, x, t (PostgreSQL 18's NOT NULL 'n' lives on the column)
    definition: str
    validated: bool
    comment: str | None = None
    index: str | None = None  # the index behind p/u/x
    inherited: bool = False  # comes from a parent table


@dataclass(frozen=True)
class Index:
    oid: int
    name: str
    definition: str
    comment: str | None = None
    clustered: bool = False


@dataclass(frozen=True)
class Trigger:
    oid: int
    name: str
    definition: str
    enabled: str  # O, D, R, A
    comment: str | None = None


@dataclass(frozen=True)
class Policy:
    oid: int
    name: str
    permissive: bool
    cmd: str  # r a w d *
    roles: tuple[str, ...]
    qual: str | None
    check: str | None
    comment: str | None = None


@dataclass(frozen=True)
class Membership:
    """The relation is in `publication` (with a column list and a row filter)."""

    publication: str
    columns: tuple[str, ...] | None = None
    where: str | None = None


@dataclass(frozen=True)
class Sequence:
    type: str
    start: int
    increment: int
    max: int
    min: int
    cache: int
    cycle: bool
    last_value: int | None  # None: not called yet (or not readable)
    readable: bool = True
    owner_table: int = 0  # the column that owns it (OWNED BY / identity)
    owner_column: str | None = None
    owner_kind: str = ""  # 'a' (serial, OWNED BY) or 'i' (identity)


@dataclass(frozen=True)
class Relation:
    oid: int
    schema_oid: int
    schema: str
    name: str
    kind: str  # r p v m S f
    owner: str
    acl: tuple[str, ...]
    rls: bool = False
    force_rls: bool = False
    replident: str = "d"
    replident_index: str | None = None
    options: tuple[str, ...] = ()
    persistence: str = "p"
    comment: str | None = None
    viewdef: str | None = None
    populated: bool = True
    partition_bound: str | None = None
    partition_key: str | None = None
    parents: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    indexes: tuple[Index, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    policies: tuple[Policy, ...] = ()
    publications: tuple[Membership, ...] = ()
    sequence: Sequence | None = None
    extension: str | None = None  # a member of this extension
    deps: tuple[tuple[str, int], ...] = ()  # what it needs to exist first (not via FKs)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Function:
    oid: int
    schema_oid: int
    schema: str
    name: str
    args: str  # pg_get_function_identity_arguments
    kind: str  # f p a w
    definition: str | None
    owner: str
    acl: tuple[str, ...]
    comment: str | None = None
    extension: str | None = None
    deps: tuple[tuple[str, int], ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}({self.args})"


@dataclass(frozen=True)
class Type:
    oid: int
    schema_oid: int
    schema: str
    name: str
    kind: str  # e (enum), c (composite), d (domain), r (range), b (base), m (multirange)
    owner: str
    acl: tuple[str, ...]
    comment: str | None = None
    labels: tuple[str, ...] = ()
    attributes: tuple[Column, ...] = ()
    base: str | None = None
    notnull: bool = False
    default: str | None = None
    collation: str | None = None
    constraints: tuple[Constraint, ...] = ()
    extension: str | None = None
    deps: tuple[tuple[str, int], ...] = ()
    users: tuple[tuple[str, int], ...] = ()  # what depends on it (enum recreation)
    array_oid: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Schema:
    oid: int
    name: str
    owner: str
    acl: tuple[str, ...]
    comment: str | None = None


@dataclass(frozen=True)
class PublicationTable:
    schema: str
    name: str
    columns: tuple[str, ...] | None = None
    where: str | None = None


@dataclass(frozen=True)
class Publication:
    oid: int
    name: str
    owner: str
    all_tables: bool
    insert: bool
    update: bool
    delete: bool
    truncate: bool
    via_root: bool
    comment: str | None = None
    tables: tuple[PublicationTable, ...] = ()
    schemas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Extension:
    oid: int
    name: str
    schema: str
    version: str
    comment: str | None = None


@dataclass(frozen=True)
class DefaultAcl:
    role: str
    schema: str | None
    objtype: str  # r S f T n
    acl: tuple[str, ...]


@dataclass(frozen=True)
class CatalogState:
    """What one capture saw; maps are keyed by OID."""

    relations: Mapping[int, Relation] = field(default_factory=dict)
    functions: Mapping[int, Function] = field(default_factory=dict)
    types: Mapping[int, Type] = field(default_factory=dict)
    schemas: Mapping[int, Schema] = field(default_factory=dict)
    publications: Mapping[int, Publication] = field(default_factory=dict)
    extensions: Mapping[int, Extension] = field(default_factory=dict)
    default_acls: tuple[DefaultAcl, ...] = ()
    watermark: int = 0  # the highest OID that existed (before only): above it is new
    current_user: str = ""

    def oids(self) -> Scope:
        return Scope(set(self.relations), set(self.functions), set(self.types),
                     set(self.schemas), set(self.publications), set(self.extensions))


@dataclass
class Scope:
    """OIDs to capture, by kind."""

    relations: set[int] = field(default_factory=set)
    functions: set[int] = field(default_factory=set)
    types: set[int] = field(default_factory=set)
    schemas: set[int] = field(default_factory=set)
    publications: set[int] = field(default_factory=set)
    extensions: set[int] = field(default_factory=set)

    def add(self, kind: str, oid: int) -> None:
        bucket = {"rel": self.relations, "func": self.functions, "type": self.types,
                  "schema": self.schemas, "pub": self.publications,
                  "ext": self.extensions}.get(kind)
        if bucket is not None and oid:
            bucket.add(int(oid))

    def update(self, other: Scope) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).update(getattr(other, f.name))

    def __contains__(self, item: tuple[str, int]) -> bool:
        kind, oid = item
        bucket = {"rel": self.relations, "func": self.functions, "type": self.types,
                  "schema": self.schemas, "pub": self.publications,
                  "ext": self.extensions}.get(kind, set())
        return oid in bucket


# ---------------------------------------------------------------------------------------------
# What the statements name (pglast)
# ---------------------------------------------------------------------------------------------

Name = tuple[str | None, str]  # (schema or None for search_path, name)


@dataclass
class References:
    """Everything the migration's statements name, and how they change data."""

    relations: set[Name] = field(default_factory=set)
    types: set[Name] = field(default_factory=set)
    functions: set[Name] = field(default_factory=set)
    schemas: set[str] = field(default_factory=set)
    publications: set[str] = field(default_factory=set)
    extensions: set[str] = field(default_factory=set)
    schema_wide: set[str] = field(default_factory=set)  # GRANT ... ON ALL ... IN SCHEMA s
    closure: set[Name] = field(default_factory=set)  # changed/dropped: capture dependents too
    closure_types: set[Name] = field(default_factory=set)
    closure_functions: set[Name] = field(default_factory=set)
    closure_schemas: set[str] = field(default_factory=set)
    opaque: list[int] = field(default_factory=list)  # lines whose effects the parse cannot see
    dml: dict[Name, set[str]] = field(default_factory=dict)  # insert update delete upsert
    irreversible: list[tuple[int, str]] = field(default_factory=list)  # (line, why)

    def widened(self) -> bool:
        return bool(self.opaque)


_RELATION_OBJECTS = {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_SEQUENCE",
                     "OBJECT_INDEX", "OBJECT_FOREIGN_TABLE"}
_TYPE_OBJECTS = {"OBJECT_TYPE", "OBJECT_DOMAIN"}
_FUNCTION_OBJECTS = {"OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE",
                     "OBJECT_AGGREGATE"}
_SUBOBJECTS = {"OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE", "OBJECT_TABCONSTRAINT",
               "OBJECT_COLUMN"}

#: Statements whose effect dbsage cannot undo, with the reason (refused up front).
IRREVERSIBLE: dict[str, str] = {
    "CreateRoleStmt": "creates a role: roles belong to the whole cluster, not to a migration",
    "AlterRoleStmt": "alters a role: roles belong to the whole cluster, not to a migration",
    "AlterRoleSetStmt": "changes a role's settings: roles belong to the whole cluster",
    "DropRoleStmt": "drops a role: its memberships and attributes are not kept",
    "GrantRoleStmt": "grants or revokes role membership (cluster-wide)",
    "AlterDatabaseStmt": "alters the database itself",
    "AlterDatabaseSetStmt": "changes the database's settings",
    "CreateEventTrigStmt": "creates an event trigger",
    "AlterEventTrigStmt": "alters an event trigger",
    "CreateCastStmt": "creates a cast", "CreateOpClassStmt": "creates an operator class",
    "CreateOpFamilyStmt": "creates an operator family",
    "AlterOpFamilyStmt": "alters an operator family",
    "DefineStmt": "creates an aggregate, operator, collation or text search object",
    "CreateConversionStmt": "creates a conversion", "CreateTransformStmt": "creates a transform",
    "CreatePLangStmt": "creates a procedural language", "CreateAmStmt": "creates an access method",
    "CreateFdwStmt": "creates a foreign-data wrapper",
    "CreateForeignServerStmt": "creates a foreign server",
    "CreateUserMappingStmt": "creates a user mapping",
    "CreateForeignTableStmt": "creates a foreign table",
    "ImportForeignSchemaStmt": "imports a foreign schema",
    "CreateStatsStmt": "creates extended statistics",
    "RuleStmt": "creates a rule", "SecLabelStmt": "sets a security label",
    "AlterExtensionStmt": "updates an extension (its upgrade script is not reversible)",
    "AlterExtensionContentsStmt": "adds or removes extension members",
    "ReassignOwnedStmt": "reassigns every object a role owns",
    "DropOwnedStmt": "drops every object a role owns",
    "CreateTableSpaceStmt": "creates a tablespace", "AlterSystemStmt": "changes the server's "
    "configuration", "CopyStmt": "loads or writes data with COPY",
    "AlterTSDictionaryStmt": "alters a text search dictionary",
    "AlterTSConfigurationStmt": "alters a text search configuration",
    "CreateSubscriptionStmt": "creates a subscription",
    "AlterOperatorStmt": "alters an operator", "AlterCollationStmt": "alters a collation",
}




def _enum(value: Any) -> str:
    return str(getattr(value, "name", value))


def _strings(names: Any) -> list[str]:
    return [str(getattr(n, "sval", n)) for n in (names or ())]


def _name(parts: list[str]) -> Name:
    return (parts[-2] if len(parts) > 1 else None, parts[-1])


def _rv(rv: Any) -> Name:
    return (rv.schemaname or None, str(rv.relname))


_REGCLASS_FUNCS = {"nextval", "setval", "currval", "pg_get_serial_sequence"}
_BUILTIN_CALLS = {"nextval", "setval", "currval", "now", "count", "coalesce", "set_config",
                  "current_setting", "pg_get_serial_sequence", "gen_random_uuid", "max", "min",
                  "sum", "avg", "lower", "upper", "format", "concat", "length", "jsonb_build_object",
                  "json_build_object", "array_agg", "string_agg", "to_jsonb", "generate_series",
                  "md5", "random", "clock_timestamp", "statement_timestamp", "version",
                  "pg_sleep", "uuid_generate_v4", "extract", "date_trunc", "greatest", "least",
                  "nullif", "substring", "replace", "trim", "left", "right", "split_part",
                  "pg_catalog"}


_LAST_REFS: list[tuple[MigrationFile, References]] = []  # the last file's, for its next caller


def references(migration: MigrationFile) -> References:
    """The objects the migration's statements name, and what they do to data (worked out once
    per parsed file: an apply asks before the lock and again inside its transaction)."""
    if _LAST_REFS and _LAST_REFS[0][0] is migration:
        return _LAST_REFS[0][1]
    refs = References()
    seen: set[str] = set()  # shapes whose every statement adds what the first one added
    for stmt in migration.statements:
        shape = stmt.shape
        if shape is not None and shape in seen:
            continue
        _refs_of(stmt.node, stmt.line, refs)
        if shape is not None and stmt.kind in _SHAPE_KINDS and not any(
                type(n).__name__ in ("FuncCall", "TypeCast") for n in walk(stmt.node)):
            seen.add(shape)
    _LAST_REFS[:] = [(migration, refs)]
    return refs


#: The statement kinds whose references do not depend on their constants or their line once
#: they call no function and cast nothing (`nextval('s')`, `'t'::regclass` name objects in
#: strings): all a second INSERT of the same shape adds to `References` is already there.
_SHAPE_KINDS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt"})


def _refs_of(node: Any, line: int, refs: References) -> None:
    kind = type(node).__name__
    if kind in IRREVERSIBLE:
        refs.irreversible.append((line, f"{IRREVERSIBLE[kind]} ({kind})"))
    if kind in ("DoStmt", "CallStmt"):
        refs.opaque.append(line)
    if kind == "TruncateStmt" and _enum(node.behavior) == "DROP_CASCADE":
        refs.irreversible.append((line, "TRUNCATE ... CASCADE also empties every table that "
                                  "references these, whose rows dbsage does not keep"))
    if kind == "SelectStmt" and _calls_user_functions(node):
        refs.opaque.append(line)
    if kind == "AlterTableStmt":
        target = _rv(node.relation)
        refs.closure.add(target)
        for cmd in node.cmds or ():
            if _enum(cmd.subtype) == "AT_DropExpression":
                refs.irreversible.append((line, "ALTER COLUMN ... DROP EXPRESSION turns a "
                                          "generated column into a plain one; PostgreSQL cannot "
                                          "make it generated again in place"))
            if _enum(cmd.subtype) in ("AT_AttachPartition", "AT_DetachPartition",
                                      "AT_AddInherit", "AT_DropInherit", "AT_SetAccessMethod",
                                      "AT_SetTableSpace", "AT_AlterColumnGenericOptions"):
                refs.irreversible.append((line, f"{_enum(cmd.subtype).removeprefix('AT_')} "
                                          "is not reversed by dbsage"))
    elif kind == "DropStmt":
        rtype = _enum(node.removeType)
        for obj in node.objects or ():
            if rtype in _RELATION_OBJECTS:
                refs.closure.add(_name(_strings(obj)))
            elif rtype in _TYPE_OBJECTS:
                tn = obj if type(obj).__name__ == "TypeName" else None
                refs.closure_types.add(_name(_strings(tn.names if tn is not None else obj)))
            elif rtype in _FUNCTION_OBJECTS:
                refs.closure_functions.add(_name(_strings(obj.objname)))
            elif rtype == "OBJECT_SCHEMA":
                refs.closure_schemas.add(str(getattr(obj, "sval", obj)))
            elif rtype in _SUBOBJECTS:
                refs.closure.add(_name(_strings(obj)[:-1]))
            elif rtype == "OBJECT_EXTENSION":
                refs.irreversible.append((line, "drops an extension: its objects and their "
                                          "data are gone"))
            elif rtype == "OBJECT_PUBLICATION":
                refs.publications.add(str(getattr(obj, "sval", obj)))
            elif rtype not in ("OBJECT_SCHEMA",):
                refs.irreversible.append((line, f"drops a {rtype.removeprefix('OBJECT_').lower()}"
                                          ", which dbsage does not recreate"))
    elif kind == "AlterEnumStmt" or kind in ("AlterDomainStmt",) or kind == "AlterTypeStmt":
        refs.closure_types.add(_name(_strings(node.typeName)))
    elif kind == "ViewStmt" and node.replace:
        refs.closure.add(_rv(node.view))
    elif kind == "CreateExtensionStmt":
        refs.extensions.add(str(node.extname))
    elif kind == "GrantStmt" and _enum(node.targtype) == "ACL_TARGET_ALL_IN_SCHEMA":
        refs.schema_wide.update(str(getattr(o, "sval", o)) for o in node.objects or ())
    elif kind == "AlterDefaultPrivilegesStmt":
        pass  # pg_default_acl is always captured whole
    elif kind == "RenameStmt":
        rtype = _enum(node.renameType)
        if rtype == "OBJECT_SCHEMA":
            refs.schemas.add(str(node.subname))
        elif rtype in _TYPE_OBJECTS or rtype == "OBJECT_ATTRIBUTE":
            if node.object is not None:
                refs.closure_types.add(_name(_strings(getattr(node.object, "names", None)
                                                      or node.object)))
            if node.relation is not None:
                refs.types.add(_rv(node.relation))
    _dml_of(node, kind, refs)
    for n in walk(node):
        _collect(n, refs)


def _calls_user_functions(node: Any) -> bool:
    for n in walk(node):
        if type(n).__name__ == "FuncCall":
            names = _strings(n.funcname)
            if names and (names[0] == "pg_catalog" or names[-1] in _BUILTIN_CALLS):
                continue
            return True
    return False


def _dml_of(node: Any, kind: str, refs: References) -> None:
    """DML on tables: every target (also inside CTEs) with what it does."""
    for n in walk(node):
        k = type(n).__name__
        if k == "InsertStmt":
            what = "insert"
            occ = getattr(n, "onConflictClause", None)
            if occ is not None and _enum(occ.action) == "ONCONFLICT_UPDATE":
                what = "upsert"
            refs.dml.setdefault(_rv(n.relation), set()).add(what)
        elif k == "UpdateStmt":
            refs.dml.setdefault(_rv(n.relation), set()).add("update")
        elif k == "DeleteStmt":
            refs.dml.setdefault(_rv(n.relation), set()).add("delete")
        elif k == "MergeStmt":
            refs.dml.setdefault(_rv(n.relation), set()).add("upsert")
            refs.dml[_rv(n.relation)].add("delete")


def _collect(n: Any, refs: References) -> None:
    k = type(n).__name__
    if k == "RangeVar":
        refs.relations.add(_rv(n))
        if n.schemaname:
            refs.schemas.add(str(n.schemaname))
    elif k == "TypeName":
        names = _strings(n.names)
        if names and names[0] != "pg_catalog":
            refs.types.add(_name(names))
    elif k == "FuncCall":
        names = _strings(n.funcname)
        if names and names[0] != "pg_catalog":
            refs.functions.add(_name(names))
        if names and names[-1] in _REGCLASS_FUNCS:
            for arg in n.args or ():
                text = _const_string(arg)
                if text:
                    refs.relations.add(_split_qualified(text))
    elif k == "TypeCast":
        tn = _strings(getattr(n.typeName, "names", None))
        if tn and tn[-1] in ("regclass", "regtype", "regproc", "regprocedure"):
            text = _const_string(n.arg)
            if text:
                target = refs.relations if tn[-1] == "regclass" else (
                    refs.types if tn[-1] == "regtype" else refs.functions)
                target.add(_split_qualified(text.split("(")[0]))
    elif k == "ObjectWithArgs":
        refs.functions.add(_name(_strings(n.objname)))
    elif k == "CreateFunctionStmt":
        refs.functions.add(_name(_strings(n.funcname)))
    elif k in ("CreateEnumStmt", "CreateDomainStmt", "CreateRangeStmt"):
        refs.types.add(_name(_strings(n.typeName if k != "CreateDomainStmt"
                                      else n.domainname)))
    elif k == "CompositeTypeStmt":
        refs.types.add(_rv(n.typevar))
    elif k == "CreateSchemaStmt":
        refs.schemas.add(str(n.schemaname))
    elif k in ("CreatePublicationStmt", "AlterPublicationStmt"):
        refs.publications.add(str(n.pubname))
    elif k == "PublicationObjSpec" and getattr(n, "name", None):
        refs.schemas.add(str(n.name))
    elif k == "GrantStmt":
        objtype = _enum(n.objtype)
        if _enum(n.targtype) == "ACL_TARGET_OBJECT":
            for obj in n.objects or ():
                if objtype == "OBJECT_SCHEMA":
                    refs.schemas.add(str(getattr(obj, "sval", obj)))
                elif objtype in _TYPE_OBJECTS and type(obj).__name__ != "TypeName":
                    refs.types.add(_name(_strings(obj)))
    elif k == "CommentStmt":
        _comment_target(n, refs)
    elif k == "AlterOwnerStmt":
        otype = _enum(n.objectType)
        obj = n.object
        if otype in _TYPE_OBJECTS or otype in _FUNCTION_OBJECTS:
            pass  # TypeName / ObjectWithArgs below it are collected anyway
        elif otype == "OBJECT_SCHEMA":
            refs.schemas.add(str(getattr(obj, "sval", obj)))
        elif otype == "OBJECT_PUBLICATION":
            refs.publications.add(str(getattr(obj, "sval", obj)))
    elif k == "AlterObjectSchemaStmt":
        refs.schemas.add(str(n.newschema))
        otype = _enum(n.objectType)
        if otype in _TYPE_OBJECTS and n.object is not None:
            refs.types.add(_name(_strings(getattr(n.object, "names", None) or n.object)))
    elif k == "DropStmt":
        rtype = _enum(n.removeType)
        for obj in n.objects or ():
            if rtype in _RELATION_OBJECTS:
                refs.relations.add(_name(_strings(obj)))
            elif rtype in _SUBOBJECTS:
                refs.relations.add(_name(_strings(obj)[:-1]))
            elif rtype == "OBJECT_SCHEMA":
                refs.schemas.add(str(getattr(obj, "sval", obj)))
            elif rtype in _TYPE_OBJECTS and type(obj).__name__ != "TypeName":
                refs.types.add(_name(_strings(obj)))
    elif k == "RenameStmt":
        rtype = _enum(n.renameType)
        if rtype in _TYPE_OBJECTS and n.object is not None and \
                type(n.object).__name__ != "TypeName":
            refs.types.add(_name(_strings(n.object)))
        if rtype == "OBJECT_SCHEMA":
            refs.schemas.add(str(n.subname))
        if rtype in ("OBJECT_TABCONSTRAINT", "OBJECT_DOMCONSTRAINT") and n.object is not None:
            refs.types.add(_name(_strings(getattr(n.object, "names", None) or n.object)))


def _comment_target(n: Any, refs: References) -> None:
    otype = _enum(n.objtype)
    obj = n.object
    if otype in _RELATION_OBJECTS:
        refs.relations.add(_name(_strings(obj)))
    elif otype == "OBJECT_COLUMN" or otype in _SUBOBJECTS:
        refs.relations.add(_name(_strings(obj)[:-1]))
    elif otype in _TYPE_OBJECTS and type(obj).__name__ != "TypeName":
        refs.types.add(_name(_strings(obj)))
    elif otype == "OBJECT_SCHEMA":
        refs.schemas.add(str(getattr(obj, "sval", obj)))
    elif otype == "OBJECT_PUBLICATION":
        refs.publications.add(str(getattr(obj, "sval", obj)))
    elif otype == "OBJECT_EXTENSION":
        refs.extensions.add(str(getattr(obj, "sval", obj)))


def _const_string(node: Any) -> str | None:
    if type(node).__name__ == "A_Const" and type(getattr(node, "val", None)).__name__ == "String":
        return str(node.val.sval)
    if type(node).__name__ == "TypeCast":
        return _const_string(node.arg)
    return None


def _split_qualified(text: str) -> Name:
    parts = [p.strip('"') for p in re.findall(r'"(?:[^"]|"")*"|[^.]+', text.strip())]
    parts = [p.replace('""', '"') for p in parts if p]
    if not parts:
        return (None, text)
    if not text.strip().startswith('"'):
        parts = [p.lower() if not p.startswith('"') else p for p in parts]
    return _name(parts)


# ---------------------------------------------------------------------------------------------
# Catalog queries
# ---------------------------------------------------------------------------------------------

USER = user_schemas_sql("n.nspname")


def _owner_sql(classid: str, objid: str, p: str) -> tuple[str, str, str]:
    """(joins, kind, oid): the user-level object a (classid, objid) catalog row belongs to: a
    relation ('rel': also for its columns' defaults, constraints, indexes, rules, triggers,
    policies), a type, a function, a schema, a publication or an extension."""
    joins = f"""
    LEFT JOIN pg_class {p}c ON {classid} = 'pg_class'::regclass AND {p}c.oid = {objid}
    LEFT JOIN pg_index {p}i ON {p}c.relkind IN ('i', 'I') AND {p}i.indexrelid = {p}c.oid
    LEFT JOIN pg_type {p}t ON {classid} = 'pg_type'::regclass AND {p}t.oid = {objid}
    LEFT JOIN pg_type {p}te ON {p}t.typcategory = 'A' AND {p}te.oid = {p}t.typelem
    LEFT JOIN pg_class {p}tr ON {p}tr.oid = coalesce(nullif({p}te.typrelid, 0),
                                                  nullif({p}t.typrelid, 0))
    LEFT JOIN pg_attrdef {p}ad ON {classid} = 'pg_attrdef'::regclass AND {p}ad.oid = {objid}
    LEFT JOIN pg_constraint {p}co ON {classid} = 'pg_constraint'::regclass
                                  AND {p}co.oid = {objid}
    LEFT JOIN pg_rewrite {p}rw ON {classid} = 'pg_rewrite'::regclass AND {p}rw.oid = {objid}
    LEFT JOIN pg_trigger {p}tg ON {classid} = 'pg_trigger'::regclass AND {p}tg.oid = {objid}
    LEFT JOIN pg_policy {p}po ON {classid} = 'pg_policy'::regclass AND {p}po.oid = {objid}
    """
    kind = f"""CASE
      WHEN {p}c.oid IS NOT NULL THEN CASE WHEN {p}c.relkind = 'c' THEN 'type'
                                          WHEN {p}c.relkind = 't' THEN NULL ELSE 'rel' END
      WHEN {p}t.oid IS NOT NULL THEN CASE WHEN {p}tr.oid IS NOT NULL AND {p}tr.relkind <> 'c'
                                          THEN 'rel' ELSE 'type' END
      WHEN {classid} = 'pg_proc'::regclass THEN 'func'
      WHEN {p}ad.oid IS NOT NULL OR {p}rw.oid IS NOT NULL OR {p}tg.oid IS NOT NULL
           OR {p}po.oid IS NOT NULL THEN 'rel'
      WHEN {p}co.oid IS NOT NULL THEN CASE WHEN {p}co.conrelid <> 0 THEN 'rel' ELSE 'type' END
      WHEN {classid} = 'pg_namespace'::regclass THEN 'schema'
      WHEN {classid} = 'pg_publication'::regclass THEN 'pub'
      WHEN {classid} = 'pg_extension'::regclass THEN 'ext'
    END"""
    oid = f"""CASE
      WHEN {p}c.oid IS NOT NULL THEN CASE WHEN {p}c.relkind IN ('i', 'I') THEN {p}i.indrelid
                                          WHEN {p}c.relkind = 'c' THEN {p}c.reltype
                                          ELSE {p}c.oid END
      WHEN {p}t.oid IS NOT NULL THEN CASE WHEN {p}tr.oid IS NOT NULL AND {p}tr.relkind <> 'c'
                                          THEN {p}tr.oid
                                          WHEN {p}te.oid IS NOT NULL THEN {p}te.oid
                                          ELSE {p}t.oid END
      WHEN {p}ad.oid IS NOT NULL THEN {p}ad.adrelid
      WHEN {p}rw.oid IS NOT NULL THEN {p}rw.ev_class
      WHEN {p}tg.oid IS NOT NULL THEN {p}tg.tgrelid
      WHEN {p}po.oid IS NOT NULL THEN {p}po.polrelid
      WHEN {p}co.oid IS NOT NULL THEN CASE WHEN {p}co.conrelid <> 0 THEN {p}co.conrelid
                                           ELSE {p}co.contypid END
      ELSE {objid} END"""
    return joins, kind, oid


_NAMES_SQL = f"""
WITH q(s, r) AS (SELECT * FROM unnest(%(schemas)s::text[], %(names)s::text[]))
SELECT 'rel', c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN q ON c.relname = q.r AND (n.nspname = q.s OR (q.s IS NULL AND
                                 n.nspname = ANY (current_schemas(false))))
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I', 'c') AND {USER}
UNION ALL
SELECT 'type', t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  JOIN unnest(%(tschemas)s::text[], %(tnames)s::text[]) AS u(s, r)
    ON t.typname = u.r AND (n.nspname = u.s OR (u.s IS NULL AND
                            n.nspname = ANY (current_schemas(false))))
  WHERE {USER}
UNION ALL
SELECT 'func', p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN unnest(%(fschemas)s::text[], %(fnames)s::text[]) AS u(s, r)
    ON p.proname = u.r AND (n.nspname = u.s OR (u.s IS NULL AND
                            n.nspname = ANY (current_schemas(false))))
  WHERE {USER}
UNION ALL
SELECT 'schema', n.oid FROM pg_namespace n WHERE n.nspname = ANY (%(nsp)s::text[]) AND {USER}
UNION ALL
SELECT 'pub', p.oid FROM pg_publication p WHERE p.pubname = ANY (%(pubs)s::text[])
UNION ALL
SELECT 'ext', e.oid FROM pg_extension e WHERE e.extname = ANY (%(exts)s::text[])
UNION ALL
SELECT 'schema_wide', n.oid FROM pg_namespace n WHERE n.nspname = ANY (%(wide)s::text[])
"""

_WIDE_SQL = f"""
SELECT 'rel', c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.oid = ANY (%(nsp)s::oid[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER}
UNION ALL
SELECT 'func', p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.oid = ANY (%(nsp)s::oid[]) AND {USER}
UNION ALL
SELECT 'type', t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  LEFT JOIN pg_class r ON r.oid = t.typrelid
  WHERE n.oid = ANY (%(nsp)s::oid[]) AND t.typcategory <> 'A'
    AND (t.typrelid = 0 OR r.relkind = 'c') AND {USER}
"""

_J1, _K1, _O1 = _owner_sql("d.classid", "d.objid", "s")

# Everything that depends on the seeds, transitively (what a DROP ... CASCADE would take).
_CLOSURE_SQL = f"""
WITH RECURSIVE seed(classid, objid) AS (
    SELECT 'pg_class'::regclass::oid, unnest(%(rels)s::oid[])
    UNION ALL SELECT 'pg_type'::regclass::oid, unnest(%(types)s::oid[])
    UNION ALL SELECT 'pg_proc'::regclass::oid, unnest(%(funcs)s::oid[])
    UNION ALL SELECT 'pg_namespace'::regclass::oid, unnest(%(nsp)s::oid[])
), dep(classid, objid) AS (
    SELECT classid, objid FROM seed
    UNION
    SELECT d.classid, d.objid FROM pg_depend d JOIN dep
      ON d.refclassid = dep.classid AND d.refobjid = dep.objid
    WHERE d.deptype IN ('n', 'a')
)
SELECT DISTINCT {_K1}, {_O1} FROM dep d {_J1}
"""

_ACL_KIND = "CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END"

_RELATIONS_SQL = f"""
SELECT c.oid, n.oid, n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner),
       coalesce(c.relacl, acldefault({_ACL_KIND}::"char", c.relowner))::text[],
       c.relrowsecurity, c.relforcerowsecurity, c.relreplident,
       (SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         WHERE x.indrelid = c.oid AND x.indisreplident),
       coalesce(c.reloptions, '{{}}'), c.relpersistence, obj_description(c.oid, 'pg_class'),
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END, c.relispopulated,
       pg_get_expr(c.relpartbound, c.oid),
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       ARRAY(SELECT format('%%I.%%I', pn.nspname, pc.relname) FROM pg_inherits h
             JOIN pg_class pc ON pc.oid = h.inhparent
             JOIN pg_namespace pn ON pn.oid = pc.relnamespace
             WHERE h.inhrelid = c.oid ORDER BY h.inhseqno),
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY (%(oids)s::oid[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
            THEN format('%%I.%%I', cn.nspname, co.collname) END,
       a.attacl::text[], col_description(a.attrelid, a.attnum),
       CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage::text END, a.atttypid
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE a.attrelid = ANY (%(oids)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS_SQL = """
SELECT co.oid, co.conrelid, co.contypid, co.conname, co.contype::text,
       pg_get_constraintdef(co.oid), co.convalidated, obj_description(co.oid, 'pg_constraint'),
       (SELECT i.relname FROM pg_class i WHERE i.oid = co.conindid AND co.contype IN ('p', 'u', 'x')),
       co.coninhcount > 0 AND NOT co.conislocal,
       CASE WHEN co.contype = 'n' THEN (SELECT a.attname FROM pg_attribute a
            WHERE a.attrelid = co.conrelid AND a.attnum = co.conkey[1]) END
FROM pg_constraint co
WHERE co.conrelid = ANY (%(rels)s::oid[]) OR co.contypid = ANY (%(types)s::oid[])
ORDER BY co.conrelid, co.contypid, co.conname
"""

_INDEXES_SQL = """
SELECT x.indexrelid, x.indrelid, i.relname, pg_get_indexdef(x.indexrelid),
       obj_description(x.indexrelid, 'pg_class'), x.indisclustered
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = ANY (%(oids)s::oid[])
  AND NOT EXISTS (SELECT FROM pg_constraint co WHERE co.conindid = x.indexrelid
                  AND co.conrelid = x.indrelid AND co.contype IN ('p', 'u', 'x'))
ORDER BY x.indrelid, i.relname
"""

_TRIGGERS_SQL = """
SELECT t.oid, t.tgrelid, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text,
       obj_description(t.oid, 'pg_trigger')
FROM pg_trigger t
WHERE t.tgrelid = ANY (%(oids)s::oid[]) AND NOT t.tgisinternal AND t.tgparentid = 0
ORDER BY t.tgrelid, t.tgname
"""

_POLICIES_SQL = """
SELECT p.oid, p.polrelid, p.polname, p.polpermissive, p.polcmd::text,
       ARRAY(SELECT CASE WHEN r.oid = 0 THEN 'public' ELSE quote_ident(pg_get_userbyid(r.oid)) END
             FROM unnest(p.polroles) WITH ORDINALITY AS r(oid, i) ORDER BY r.i),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
       obj_description(p.oid, 'pg_policy')
FROM pg_policy p WHERE p.polrelid = ANY (%(oids)s::oid[]) ORDER BY p.polrelid, p.polname
"""

_MEMBERSHIP_SQL = """
SELECT pr.prrelid, p.pubname,
       CASE WHEN pr.prattrs IS NOT NULL THEN ARRAY(
           SELECT a.attname FROM unnest(pr.prattrs) WITH ORDINALITY AS k(n, i)
           JOIN pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = k.n ORDER BY k.i) END,
       pg_get_expr(pr.prqual, pr.prrelid)
FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
WHERE pr.prrelid = ANY (%(oids)s::oid[]) ORDER BY pr.prrelid, p.pubname
"""

_SEQUENCES_SQL = """
SELECT s.seqrelid, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmax,
       s.seqmin, s.seqcache, s.seqcycle,
       CASE WHEN has_sequence_privilege(s.seqrelid, 'SELECT')
                 OR has_sequence_privilege(s.seqrelid, 'USAGE')
            THEN pg_sequence_last_value(s.seqrelid) END,
       has_sequence_privilege(s.seqrelid, 'SELECT') OR has_sequence_privilege(s.seqrelid, 'USAGE'),
       d.refobjid, a.attname, d.deptype::text
FROM pg_sequence s
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE s.seqrelid = ANY (%(oids)s::oid[])
"""

_FUNCTIONS_SQL = """
SELECT p.oid, n.oid, n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
       p.prokind::text,
       CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END,
       pg_get_userbyid(p.proowner), coalesce(p.proacl, acldefault('f', p.proowner))::text[],
       obj_description(p.oid, 'pg_proc'),
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.oid = ANY (%(oids)s::oid[])
"""

_TYPES_SQL = """
SELECT t.oid, n.oid, n.nspname, t.typname, t.typtype::text, pg_get_userbyid(t.typowner),
       coalesce(t.typacl, acldefault('T', t.typowner))::text[], obj_description(t.oid, 'pg_type'),
       ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
             ORDER BY e.enumsortorder),
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
       t.typnotnull, t.typdefault,
       CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation <> bt.typcollation
            THEN format('%%I.%%I', cn.nspname, co.collname) END,
       t.typrelid,
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e'),
       t.typarray
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
LEFT JOIN pg_collation co ON co.oid = t.typcollation
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE t.oid = ANY (%(oids)s::oid[])
"""

_SCHEMAS_SQL = """
SELECT n.oid, n.nspname, pg_get_userbyid(n.nspowner),
       coalesce(n.nspacl, acldefault('n', n.nspowner))::text[],
       obj_description(n.oid, 'pg_namespace')
FROM pg_namespace n WHERE n.oid = ANY (%(oids)s::oid[])
"""

_PUBLICATIONS_SQL = """
SELECT p.oid, p.pubname, pg_get_userbyid(p.pubowner), p.puballtables, p.pubinsert,
       p.pubupdate, p.pubdelete, p.pubtruncate, p.pubviaroot,
       obj_description(p.oid, 'pg_publication'),
       ARRAY(SELECT n.nspname::text FROM pg_publication_namespace pn
             JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE pn.pnpubid = p.oid ORDER BY 1)
FROM pg_publication p WHERE p.oid = ANY (%(oids)s::oid[])
"""

_PUBLICATION_TABLES_SQL = """
SELECT pr.prpubid, n.nspname, c.relname,
       CASE WHEN pr.prattrs IS NOT NULL THEN ARRAY(
           SELECT a.attname FROM unnest(pr.prattrs) WITH ORDINALITY AS k(n, i)
           JOIN pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = k.n ORDER BY k.i) END,
       pg_get_expr(pr.prqual, pr.prrelid)
FROM pg_publication_rel pr JOIN pg_class c ON c.oid = pr.prrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE pr.prpubid = ANY (%(oids)s::oid[]) ORDER BY 2, 3
"""

_EXTENSIONS_SQL = """
SELECT e.oid, e.extname, n.nspname, e.extversion, obj_description(e.oid, 'pg_extension')
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.oid = ANY (%(oids)s::oid[])
"""

_DEFAULT_ACLS_SQL = """
SELECT pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype::text, d.defaclacl::text[]
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
ORDER BY 1, 2 NULLS FIRST, 3
"""

_J2, _K2, _O2 = _owner_sql("d.refclassid", "d.refobjid", "r")
_J3, _K3, _O3 = _owner_sql("d.classid", "d.objid", "s")

# What each captured object needs to exist first: its columns' types, defaults, checks,
# generated expressions and a view's query (foreign keys, triggers and policies come last in
# a rollback anyway, so they are left out).
_DEPS_SQL = f"""
SELECT src_kind, src_oid, ref_kind, ref_oid FROM (
  SELECT {_K3} AS src_kind, {_O3} AS src_oid, {_K2} AS ref_kind, {_O2} AS ref_oid
  FROM pg_depend d {_J3} {_J2}
  WHERE d.deptype = 'n' AND d.classid = ANY (%(classes)s::regclass[])
    AND d.objid = ANY (%(objids)s::oid[])
    AND NOT (d.classid = 'pg_constraint'::regclass AND EXISTS (
        SELECT FROM pg_constraint f WHERE f.oid = d.objid AND f.contype = 'f'))
    AND d.classid NOT IN ('pg_trigger'::regclass, 'pg_policy'::regclass)
) x WHERE ref_kind IS NOT NULL AND (src_kind, src_oid) IS DISTINCT FROM (ref_kind, ref_oid)
"""

_SUBOBJECTS_SQL = """
SELECT 'pg_attrdef'::regclass::oid, d.oid FROM pg_attrdef d WHERE d.adrelid = ANY (%(rels)s::oid[])
UNION ALL SELECT 'pg_rewrite'::regclass::oid, r.oid FROM pg_rewrite r
  WHERE r.ev_class = ANY (%(rels)s::oid[])
UNION ALL SELECT 'pg_constraint'::regclass::oid, c.oid FROM pg_constraint c
  WHERE c.conrelid = ANY (%(rels)s::oid[]) OR c.contypid = ANY (%(types)s::oid[])
UNION ALL SELECT 'pg_class'::regclass::oid, c.oid FROM pg_class c WHERE c.oid = ANY (%(rels)s::oid[])
  OR c.oid IN (SELECT t.typrelid FROM pg_type t WHERE t.oid = ANY (%(types)s::oid[]))
UNION ALL SELECT 'pg_type'::regclass::oid, t.oid FROM pg_type t WHERE t.oid = ANY (%(types)s::oid[])
UNION ALL SELECT 'pg_proc'::regclass::oid, p.oid FROM pg_proc p WHERE p.oid = ANY (%(funcs)s::oid[])
"""

_J4, _K4, _O4 = _owner_sql("d.classid", "d.objid", "u")

# What depends on a type (columns of tables, functions, views, other types).
_USERS_SQL = f"""
SELECT d.refobjid, {_K4}, {_O4}, d.classid::regclass::text
FROM pg_depend d {_J4}
WHERE d.refclassid = 'pg_type'::regclass AND d.deptype = 'n'
  AND d.refobjid = ANY (%(oids)s::oid[] || ARRAY(SELECT typarray FROM pg_type
                                                 WHERE oid = ANY (%(oids)s::oid[])))
"""

_WATERMARK_SQL = """
SELECT greatest((SELECT max(oid) FROM pg_class), (SELECT max(oid) FROM pg_type),
                (SELECT max(oid) FROM pg_proc), (SELECT max(oid) FROM pg_namespace),
                (SELECT max(oid) FROM pg_constraint), (SELECT max(oid) FROM pg_trigger),
                (SELECT max(oid) FROM pg_policy), (SELECT max(oid) FROM pg_rewrite),
                (SELECT max(oid) FROM pg_attrdef), (SELECT max(oid) FROM pg_publication),
                (SELECT max(oid) FROM pg_extension), (SELECT max(oid) FROM pg_enum),
                (SELECT max(oid) FROM pg_default_acl))::bigint, current_user::text
"""


def _ours(xmin: str) -> str:
    """SQL: the catalog row was written by this transaction (its top xid or one of its
    subtransactions): a visible row whose xmin is still in progress can only be ours."""
    diff = (f"((((me.top %% 4294967296) - ({xmin})::text::bigint + 6442450944) %% 4294967296)"
            " - 2147483648)")
    # age() <= 0 first (cheap, and never false for ours): the exact test only for those rows.
    return (f"CASE WHEN age({xmin}) > 0 THEN false WHEN {diff} <= 0 THEN "
            f"pg_xact_status((me.top - {diff})::text::xid8) = 'in progress' ELSE false END")


_J5, _K5, _O5 = _owner_sql("d.classoid", "d.objoid", "m")

# Every user-level object whose catalog rows this transaction wrote, and catalogs dbsage does
# not reverse (`other:*`).
_TOUCHED_HEAD = f"""
WITH me AS MATERIALIZED (SELECT pg_current_xact_id()::text::bigint AS top),
{{descr}}types AS MATERIALIZED (SELECT t.oid, t.typcategory, t.typrelid FROM pg_type t, me
                       WHERE {_ours('t.xmin')}),
rows(kind, oid) AS (
"""
# Each branch: (in the quick pass too, SQL). The quick pass reads only the catalogs where a
# new object shows; the thorough one (after a DO block or a function call) every catalog.
_TOUCHED_BRANCHES: tuple[tuple[bool, str], ...] = (
    (True, f"""SELECT CASE WHEN c.relkind IN ('i', 'I') THEN 'rel' WHEN c.relkind = 'c' THEN 'type'
              WHEN c.relkind = 't' THEN NULL ELSE 'rel' END,
         CASE WHEN c.relkind IN ('i', 'I') THEN (SELECT indrelid FROM pg_index
                                                 WHERE indexrelid = c.oid)
              WHEN c.relkind = 'c' THEN c.reltype ELSE c.oid END
    FROM pg_class c, me WHERE {_ours('c.xmin')}"""),
    (False, f"""SELECT 'rel', a.attrelid FROM pg_attribute a, me WHERE {_ours('a.xmin')}"""),
    (False, f"""SELECT 'rel', d.adrelid FROM pg_attrdef d, me WHERE {_ours('d.xmin')}"""),
    (False, f"""SELECT CASE WHEN co.conrelid <> 0 THEN 'rel' ELSE 'type' END,
                   CASE WHEN co.conrelid <> 0 THEN co.conrelid ELSE co.contypid END
    FROM pg_constraint co, me WHERE {_ours('co.xmin')}"""),
    (False, f"""SELECT 'rel', t.tgrelid FROM pg_trigger t, me WHERE {_ours('t.xmin')}"""),
    (False, f"""SELECT 'rel', p.polrelid FROM pg_policy p, me WHERE {_ours('p.xmin')}"""),
    (False, f"""SELECT CASE WHEN r.ev_type = '1' AND r.rulename = '_RETURN' THEN 'rel'
                        ELSE 'other:rule' END, r.ev_class
    FROM pg_rewrite r, me WHERE {_ours('r.xmin')}"""),
    (False, f"""SELECT 'rel', s.seqrelid FROM pg_sequence s, me WHERE {_ours('s.xmin')}"""),
    (False, f"""SELECT 'rel', h.inhrelid FROM pg_inherits h, me WHERE {_ours('h.xmin')}"""),
    (False, f"""SELECT 'rel', pr.prrelid FROM pg_publication_rel pr, me WHERE {_ours('pr.xmin')}"""),
    (False, f"""SELECT 'pub', pr.prpubid FROM pg_publication_rel pr, me WHERE {_ours('pr.xmin')}"""),
    (False, f"""SELECT 'pub', pn.pnpubid FROM pg_publication_namespace pn, me
    WHERE {_ours('pn.xmin')}"""),
    (True, """SELECT CASE WHEN t.typcategory = 'A' THEN 'array' WHEN r.relkind IS NOT NULL
                        AND r.relkind <> 'c' THEN 'rel' ELSE 'type' END,
                   CASE WHEN r.relkind IS NOT NULL AND r.relkind <> 'c' THEN r.oid
                        ELSE t.oid END
    FROM types t LEFT JOIN pg_class r ON r.oid = t.typrelid"""),
    (False, f"""SELECT 'type', e.enumtypid FROM pg_enum e, me WHERE {_ours('e.xmin')}"""),
    (True, f"""SELECT 'func', p.oid FROM pg_proc p, me WHERE {_ours('p.xmin')}"""),
    (True, f"""SELECT 'schema', n.oid FROM pg_namespace n, me WHERE {_ours('n.xmin')}"""),
    (True, f"""SELECT 'pub', p.oid FROM pg_publication p, me WHERE {_ours('p.xmin')}"""),
    (True, f"""SELECT 'ext', e.oid FROM pg_extension e, me WHERE {_ours('e.xmin')}"""),
    (True, f"""SELECT 'defacl', d.oid FROM pg_default_acl d, me WHERE {_ours('d.xmin')}"""),
    (False, f"""SELECT {_K5}, {_O5} FROM descr d {_J5}"""),
    (False, f"""SELECT 'other:statistics', s.oid FROM pg_statistic_ext s, me WHERE {_ours('s.xmin')}"""),
    (False, f"""SELECT 'other:event trigger', e.oid FROM pg_event_trigger e, me
    WHERE {_ours('e.xmin')}"""),
    (False, f"""SELECT 'other:cast', c.oid FROM pg_cast c, me WHERE {_ours('c.xmin')}"""),
    (False, f"""SELECT 'other:operator', o.oid FROM pg_operator o, me WHERE {_ours('o.xmin')}"""),
    (False, f"""SELECT 'other:operator class', o.oid FROM pg_opclass o, me WHERE {_ours('o.xmin')}"""),
    (False, f"""SELECT 'other:collation', c.oid FROM pg_collation c, me WHERE {_ours('c.xmin')}"""),
    (False, f"""SELECT 'other:foreign server', s.oid FROM pg_foreign_server s, me
    WHERE {_ours('s.xmin')}"""),
    (False, f"""SELECT 'other:language', l.oid FROM pg_language l, me WHERE {_ours('l.xmin')}"""),
    (False, f"""SELECT 'other:large object', l.oid FROM pg_largeobject_metadata l, me
    WHERE {_ours('l.xmin')}"""),
    (False, f"""SELECT 'other:text search', c.oid FROM pg_ts_config c, me WHERE {_ours('c.xmin')}"""),
)
_TOUCHED_TAIL = """
),
-- an array type belongs to its element type (or its table); an index, a toast table to
-- their table; a composite type's relation to the type. Scalar subqueries: a handful of rows
-- looked up by OID (joins would hash whole catalogs).
arrays(kind, oid) AS (
  SELECT CASE WHEN r.relkind IS NOT NULL AND r.relkind <> 'c' THEN 'rel' ELSE 'type' END,
         CASE WHEN r.relkind IS NOT NULL AND r.relkind <> 'c' THEN r.oid ELSE e.oid END
  FROM (SELECT oid FROM rows WHERE kind = 'array') x
  CROSS JOIN LATERAL (SELECT typelem FROM pg_type WHERE oid = x.oid) a
  CROSS JOIN LATERAL (SELECT oid, typrelid FROM pg_type WHERE oid = a.typelem) e
  LEFT JOIN LATERAL (SELECT oid, relkind FROM pg_class WHERE oid = e.typrelid) r ON true
), kinds(kind, oid, relkind) AS (
  SELECT u.kind, u.oid, CASE WHEN u.kind = 'rel' THEN (SELECT relkind FROM pg_class
                                                       WHERE oid = u.oid) END
  FROM (SELECT kind, oid FROM rows WHERE kind <> 'array' UNION SELECT kind, oid FROM arrays) u
  WHERE u.kind IS NOT NULL AND u.oid IS NOT NULL AND u.oid <> 0
), mapped(kind, oid) AS (
  SELECT CASE WHEN k.relkind = 'c' THEN 'type' ELSE k.kind END,
         CASE WHEN k.relkind IN ('i', 'I') THEN (SELECT indrelid FROM pg_index
                                                 WHERE indexrelid = k.oid)
              WHEN k.relkind = 'c' THEN (SELECT reltype FROM pg_class WHERE oid = k.oid)
              WHEN k.relkind = 't' THEN (SELECT t.oid FROM pg_class t
                                         WHERE t.reltoastrelid = k.oid)
              ELSE k.oid END
  FROM kinds k
)
SELECT DISTINCT m.kind, m.oid, CASE m.kind
    WHEN 'rel' THEN (SELECT n.nspname FROM pg_class c JOIN pg_namespace n
                     ON n.oid = c.relnamespace WHERE c.oid = m.oid)
    WHEN 'type' THEN (SELECT n.nspname FROM pg_type t JOIN pg_namespace n
                      ON n.oid = t.typnamespace WHERE t.oid = m.oid)
    WHEN 'func' THEN (SELECT n.nspname FROM pg_proc p JOIN pg_namespace n
                      ON n.oid = p.pronamespace WHERE p.oid = m.oid)
    WHEN 'schema' THEN (SELECT nspname FROM pg_namespace WHERE oid = m.oid) END
FROM mapped m WHERE m.oid IS NOT NULL
"""
_DESCR_CTE = f"""descr AS MATERIALIZED (SELECT d.classoid, d.objoid FROM pg_description d, me
                       WHERE {_ours('d.xmin')}),
"""


def _touched_sql(thorough: bool) -> str:
    branches = [sql for quick, sql in _TOUCHED_BRANCHES if quick or thorough]
    return (_TOUCHED_HEAD.replace("{descr}", _DESCR_CTE if thorough else "")
            + "\n  UNION ALL ".join(branches) + _TOUCHED_TAIL)


# Where each touched object lives, to leave out dbsage's bookkeeping and temporary tables.
_LOCATED_SQL = """
SELECT 'rel', c.oid, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = ANY (%(rels)s::oid[])
UNION ALL SELECT 'type', t.oid, n.nspname FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = ANY (%(types)s::oid[])
UNION ALL SELECT 'func', p.oid, n.nspname FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = ANY (%(funcs)s::oid[])
UNION ALL SELECT 'schema', n.oid, n.nspname FROM pg_namespace n
  WHERE n.oid = ANY (%(nsp)s::oid[])
"""


# ---------------------------------------------------------------------------------------------
# Scope and capture
# ---------------------------------------------------------------------------------------------


def _cols(names: Iterable[Name]) -> tuple[list[str | None], list[str]]:
    items = sorted(set(names), key=lambda n: (n[0] or "", n[1]))
    return [s for s, _ in items], [r for _, r in items]


def before_scope(conn: psycopg.Connection, refs: References) -> Scope:
    """The OIDs of everything the statements name, and of what depends on what they change."""
    scope = Scope()
    schemas, names = _cols(refs.relations | refs.closure)
    tschemas, tnames = _cols(refs.types | refs.closure_types)
    fschemas, fnames = _cols(refs.functions | refs.closure_functions)
    wide_names = set(refs.schema_wide)
    if refs.widened():  # a DO block or a function call: everything it may reach
        wide_names |= refs.schemas | set(_search_path(conn))
    rows = conn.execute(_NAMES_SQL, {
        "schemas": schemas, "names": names, "tschemas": tschemas, "tnames": tnames,
        "fschemas": fschemas, "fnames": fnames,
        "nsp": sorted(refs.schemas | refs.closure_schemas), "pubs": sorted(refs.publications),
        "exts": sorted(refs.extensions), "wide": sorted(wide_names)}).fetchall()
    wide: list[int] = []
    for kind, oid in rows:
        if kind == "schema_wide":
            wide.append(int(oid))
        else:
            scope.add(kind, int(oid))
    _owners_of_relations(conn, scope)
    if wide:
        for kind, oid in conn.execute(_WIDE_SQL, {"nsp": wide}).fetchall():
            scope.add(kind, int(oid))
    seeds = _closure_seeds(conn, refs, scope)
    if any(seeds.values()):
        for kind, oid in conn.execute(_CLOSURE_SQL, seeds).fetchall():
            if kind:
                scope.add(kind, int(oid))
    return scope


def _search_path(conn: psycopg.Connection) -> list[str]:
    row = conn.execute("SELECT current_schemas(false)::text[]").fetchone()
    return list(row[0]) if row else []


def _closure_seeds(conn: psycopg.Connection, refs: References,
                   scope: Scope) -> dict[str, list[int]]:
    seeds: dict[str, list[int]] = {"rels": [], "types": [], "funcs": [], "nsp": []}
    if not (refs.closure or refs.closure_types or refs.closure_functions or refs.closure_schemas):
        return seeds
    schemas, names = _cols(refs.closure)
    tschemas, tnames = _cols(refs.closure_types)
    fschemas, fnames = _cols(refs.closure_functions)
    rows = conn.execute(_NAMES_SQL, {
        "schemas": schemas, "names": names, "tschemas": tschemas, "tnames": tnames,
        "fschemas": fschemas, "fnames": fnames, "nsp": sorted(refs.closure_schemas),
        "pubs": [], "exts": [], "wide": []}).fetchall()
    key = {"rel": "rels", "type": "types", "func": "funcs", "schema": "nsp"}
    for kind, oid in rows:
        if kind in key:
            seeds[key[kind]].append(int(oid))
    return seeds


def watermark(conn: psycopg.Connection) -> tuple[int, str]:
    """The highest OID of the catalogs dbsage reverses (anything above it is new), and the
    connected role."""
    row = conn.execute(_WATERMARK_SQL).fetchone()
    assert row is not None
    return int(row[0] or 0), str(row[1])


@dataclass(frozen=True)
class Touched:
    """What this transaction wrote into the catalogs: the objects, and what dbsage does not
    reverse (by catalog)."""

    scope: Scope
    other: tuple[str, ...]
    default_acls: bool


def touched(conn: psycopg.Connection, *, thorough: bool = True) -> Touched:
    """Every object whose catalog rows this transaction (or one of its subtransactions) wrote,
    outside dbsage's bookkeeping, the system and temporary schemas.

    Not `thorough`: only the objects it created (their own catalog rows), enough when every
    statement was parsed (what they change is captured by name); thorough after a DO block or
    a function call, which may change anything."""
    from dbsage.tools.catalog import is_user_schema

    scope = Scope()
    other: list[str] = []
    defacl = False
    for kind, oid, schema in conn.execute(_touched_sql(thorough), {}).fetchall():
        if kind == "defacl":
            defacl = True
        elif kind.startswith("other:"):
            other.append(kind.removeprefix("other:"))
        elif schema is None or is_user_schema(str(schema)):
            scope.add(kind, int(oid))
    return Touched(scope, tuple(sorted(set(other))), defacl)


def _owners_of_relations(conn: psycopg.Connection, scope: Scope) -> None:
    """Indexes belong to their table, toast tables to theirs, a composite type's relation to
    the type: keep those owners in `scope` instead."""
    if not scope.relations:
        return
    rows = conn.execute("""
        SELECT c.oid, c.relkind::text, x.indrelid, c.reltype,
               (SELECT t.oid FROM pg_class t WHERE t.reltoastrelid = c.oid)
        FROM pg_class c LEFT JOIN pg_index x ON x.indexrelid = c.oid
        WHERE c.oid = ANY (%s::oid[]) AND c.relkind IN ('i', 'I', 'c', 't')""",
                        (sorted(scope.relations),)).fetchall()
    for oid, kind, table, rowtype, toasted in rows:
        scope.relations.discard(int(oid))
        if kind in ("i", "I") and table:
            scope.relations.add(int(table))
        elif kind == "c":
            scope.types.add(int(rowtype))
        elif kind == "t" and toasted:
            scope.relations.add(int(toasted))


def _drop_unowned(conn: psycopg.Connection, scope: Scope) -> None:
    """Leave out what lives in the bookkeeping, system and temporary schemas."""
    from dbsage.tools.catalog import is_user_schema

    rows = conn.execute(_LOCATED_SQL, {"rels": sorted(scope.relations),
                                       "types": sorted(scope.types),
                                       "funcs": sorted(scope.functions),
                                       "nsp": sorted(scope.schemas)}).fetchall()
    for kind, oid, schema in rows:
        if not is_user_schema(str(schema)):
            {"rel": scope.relations, "type": scope.types, "func": scope.functions,
             "schema": scope.schemas}[kind].discard(int(oid))


def capture(conn: psycopg.Connection, scope: Scope, *, mark: bool = False,
            deps: bool = True) -> CatalogState:
    """The catalog state of the objects in `scope` (those that exist), with the default ACLs;
    `mark` also records the OID watermark (the before capture); `deps` what each object needs
    to exist first (only a state to recreate objects from needs it).

    Read with an empty search_path (as pg_dump does), so every name in a definition is
    schema-qualified and means the same whatever the search_path of whoever runs it; the
    transaction's own search_path is put back afterwards.
    """
    row = conn.execute("SELECT current_setting('search_path'), "
                       "set_config('search_path', '', true)").fetchone()
    saved = row[0] if row else ""
    try:
        return _capture(conn, scope, mark, deps)
    finally:
        if not conn.closed and conn.info.transaction_status != 3:  # not INERROR
            conn.execute("SELECT set_config('search_path', %s, true)", (saved,))


def _capture(conn: psycopg.Connection, scope: Scope, mark: bool, deps: bool) -> CatalogState:
    from dbsage.tools.catalog import is_user_schema

    wm, user = watermark(conn) if mark else (0, "")
    rels = sorted(scope.relations)
    types = sorted(scope.types)
    # A composite type's attributes are pg_attribute rows of its relation.
    comp_rows = conn.execute("SELECT oid, typrelid FROM pg_type WHERE oid = ANY (%s::oid[]) "
                             "AND typrelid <> 0", (types,)).fetchall() if types else []
    comp_rel = {int(r[1]): int(r[0]) for r in comp_rows}
    relations = _relations(conn, rels, comp_rel)
    relations = {k: v for k, v in relations.items() if is_user_schema(v.schema)}
    functions = {k: v for k, v in _functions(conn, sorted(scope.functions)).items()
                 if is_user_schema(v.schema)}
    type_map = {k: v for k, v in _types(conn, types, comp_rel).items()
                if is_user_schema(v.schema)}
    schemas = {k: v for k, v in _schemas(conn, sorted(scope.schemas)).items()
               if is_user_schema(v.name)}
    pubs = _publications(conn, sorted(scope.publications))
    exts = _extensions(conn, sorted(scope.extensions))
    defaults = tuple(DefaultAcl(r[0], r[1], r[2], tuple(r[3] or ()))
                     for r in conn.execute(_DEFAULT_ACLS_SQL).fetchall())
    if deps:
        relations, functions, type_map = _with_deps(conn, relations, functions, type_map)
    return CatalogState(relations, functions, type_map, schemas, pubs, exts, defaults, wm, user)


def _relations(conn: psycopg.Connection, oids: list[int],
               comp_rel: dict[int, int]) -> dict[int, Relation]:
    if not oids:
        return {}
    p = {"oids": oids}
    base = conn.execute(_RELATIONS_SQL, p).fetchall()
    if not base:
        return {}
    found = [int(r[0]) for r in base]
    p = {"oids": found}
    columns: dict[int, list[Column]] = {}
    for r in conn.execute(_COLUMNS_SQL, p).fetchall():
        columns.setdefault(int(r[0]), []).append(_column(r))
    constraints: dict[int, list[Constraint]] = {}
    notnull: dict[tuple[int, str], str] = {}
    for r in conn.execute(_CONSTRAINTS_SQL, {"rels": found, "types": []}).fetchall():
        if r[4] == "n":
            notnull[(int(r[1]), str(r[10]))] = str(r[3])
            continue
        constraints.setdefault(int(r[1]), []).append(_constraint(r))
    indexes: dict[int, list[Index]] = {}
    for r in conn.execute(_INDEXES_SQL, p).fetchall():
        indexes.setdefault(int(r[1]), []).append(Index(int(r[0]), r[2], r[3], r[4], bool(r[5])))
    triggers: dict[int, list[Trigger]] = {}
    for r in conn.execute(_TRIGGERS_SQL, p).fetchall():
        triggers.setdefault(int(r[1]), []).append(Trigger(int(r[0]), r[2], r[3], r[4], r[5]))
    policies: dict[int, list[Policy]] = {}
    for r in conn.execute(_POLICIES_SQL, p).fetchall():
        policies.setdefault(int(r[1]), []).append(
            Policy(int(r[0]), r[2], bool(r[3]), r[4], tuple(r[5] or ()), r[6], r[7], r[8]))
    members: dict[int, list[Membership]] = {}
    for r in conn.execute(_MEMBERSHIP_SQL, p).fetchall():
        members.setdefault(int(r[0]), []).append(
            Membership(r[1], tuple(r[2]) if r[2] is not None else None, r[3]))
    sequences: dict[int, Sequence] = {}
    seq_oids = [int(r[0]) for r in base if r[4] == "S"]
    if seq_oids:
        for r in conn.execute(_SEQUENCES_SQL, {"oids": seq_oids}).fetchall():
            sequences[int(r[0])] = Sequence(r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5]),
                                            int(r[6]), bool(r[7]),
                                            int(r[8]) if r[8] is not None else None,
                                            bool(r[9]), int(r[10] or 0), r[11], r[12] or "")
    out: dict[int, Relation] = {}
    for r in base:
        oid = int(r[0])
        cols = tuple(dataclasses.replace(c, notnull_name=notnull.get((oid, c.name)))
                     for c in columns.get(oid, ()))
        out[oid] = Relation(
            oid, int(r[1]), r[2], r[3], r[4], r[5], tuple(r[6] or ()), bool(r[7]), bool(r[8]),
            r[9], r[10], tuple(sorted(r[11] or ())), r[12], r[13], r[14], bool(r[15]), r[16],
            r[17], tuple(r[18] or ()), cols, tuple(constraints.get(oid, ())),
            tuple(indexes.get(oid, ())), tuple(triggers.get(oid, ())),
            tuple(policies.get(oid, ())), tuple(members.get(oid, ())), sequences.get(oid),
            r[19])
    del comp_rel
    return out


def _column(r: Any) -> Column:
    return Column(int(r[1]), r[2], r[3], bool(r[4]), r[5], r[6] or "", r[7] or "", r[8],
                  tuple(r[9]) if r[9] is not None else None, r[10], r[11], None, int(r[12]))


def _constraint(r: Any) -> Constraint:
    return Constraint(int(r[0]), r[3], r[4], r[5], bool(r[6]), r[7], r[8], bool(r[9]))


def _functions(conn: psycopg.Connection, oids: list[int]) -> dict[int, Function]:
    if not oids:
        return {}
    return {int(r[0]): Function(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7],
                                tuple(r[8] or ()), r[9], r[10])
            for r in conn.execute(_FUNCTIONS_SQL, {"oids": oids}).fetchall()}


def _types(conn: psycopg.Connection, oids: list[int],
           comp_rel: dict[int, int]) -> dict[int, Type]:
    if not oids:
        return {}
    rows = conn.execute(_TYPES_SQL, {"oids": oids}).fetchall()
    relids = [int(r[13]) for r in rows if r[13]]
    attrs: dict[int, list[Column]] = {}
    if relids:
        for r in conn.execute(_COLUMNS_SQL, {"oids": relids}).fetchall():
            attrs.setdefault(int(r[0]), []).append(_column(r))
    domain_cons: dict[int, list[Constraint]] = {}
    domains = [int(r[0]) for r in rows if r[4] == "d"]
    if domains:
        for r in conn.execute(_CONSTRAINTS_SQL, {"rels": [], "types": domains}).fetchall():
            if r[4] == "n":
                continue
            domain_cons.setdefault(int(r[2]), []).append(_constraint(r))
    out: dict[int, Type] = {}
    for r in rows:
        oid = int(r[0])
        out[oid] = Type(oid, int(r[1]), r[2], r[3], r[4], r[5], tuple(r[6] or ()), r[7],
                        tuple(r[8] or ()), tuple(attrs.get(int(r[13] or 0), ())), r[9],
                        bool(r[10]), r[11], r[12], tuple(domain_cons.get(oid, ())), r[14],
                        array_oid=int(r[15] or 0))
    del comp_rel
    return out


def _schemas(conn: psycopg.Connection, oids: list[int]) -> dict[int, Schema]:
    if not oids:
        return {}
    return {int(r[0]): Schema(int(r[0]), r[1], r[2], tuple(r[3] or ()), r[4])
            for r in conn.execute(_SCHEMAS_SQL, {"oids": oids}).fetchall()}


def _publications(conn: psycopg.Connection, oids: list[int]) -> dict[int, Publication]:
    if not oids:
        return {}
    tables: dict[int, list[PublicationTable]] = {}
    for r in conn.execute(_PUBLICATION_TABLES_SQL, {"oids": oids}).fetchall():
        tables.setdefault(int(r[0]), []).append(
            PublicationTable(r[1], r[2], tuple(r[3]) if r[3] is not None else None, r[4]))
    return {int(r[0]): Publication(int(r[0]), r[1], r[2], bool(r[3]), bool(r[4]), bool(r[5]),
                                   bool(r[6]), bool(r[7]), bool(r[8]), r[9],
                                   tuple(tables.get(int(r[0]), ())), tuple(r[10] or ()))
            for r in conn.execute(_PUBLICATIONS_SQL, {"oids": oids}).fetchall()}


def _extensions(conn: psycopg.Connection, oids: list[int]) -> dict[int, Extension]:
    if not oids:
        return {}
    return {int(r[0]): Extension(int(r[0]), r[1], r[2], r[3], r[4])
            for r in conn.execute(_EXTENSIONS_SQL, {"oids": oids}).fetchall()}


def _with_deps(conn: psycopg.Connection, relations: dict[int, Relation],
               functions: dict[int, Function], types: dict[int, Type]
               ) -> tuple[dict[int, Relation], dict[int, Function], dict[int, Type]]:
    """Attach what each object needs to exist first, and what uses each type."""
    if not (relations or functions or types):
        return relations, functions, types
    subs = conn.execute(_SUBOBJECTS_SQL, {"rels": sorted(relations), "types": sorted(types),
                                          "funcs": sorted(functions)}).fetchall()
    classes = sorted({str(int(r[0])) for r in subs})
    deps: dict[tuple[str, int], set[tuple[str, int]]] = {}
    if subs:
        rows = conn.execute(_DEPS_SQL, {"classes": classes,
                                        "objids": sorted({int(r[1]) for r in subs})}).fetchall()
        for sk, so, rk, ro in rows:
            if sk and so:
                deps.setdefault((str(sk), int(so)), set()).add((str(rk), int(ro)))
    users: dict[int, set[tuple[str, int]]] = {}
    if types:
        for ref, kind, oid, _cls in conn.execute(_USERS_SQL,
                                                 {"oids": sorted(types)}).fetchall():
            if kind and oid:
                users.setdefault(int(ref), set()).add((str(kind), int(oid)))
        arrays: dict[int, int] = dict(conn.execute("SELECT typarray, oid FROM pg_type WHERE oid = ANY "
                                   "(%s::oid[])", (sorted(types),)).fetchall())
        for arr, elem in arrays.items():
            if int(arr) in users:
                users.setdefault(int(elem), set()).update(users.pop(int(arr)))

    def d(kind: str, oid: int) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(x for x in deps.get((kind, oid), ()) if x != (kind, oid)))

    return ({k: dataclasses.replace(v, deps=d("rel", k)) for k, v in relations.items()},
            {k: dataclasses.replace(v, deps=d("func", k)) for k, v in functions.items()},
            {k: dataclasses.replace(v, deps=d("type", k),
                                    users=tuple(sorted(x for x in users.get(k, ())
                                                       if x != ("type", k))))
             for k, v in types.items()})


# ---------------------------------------------------------------------------------------------
# By name: what the objects are called, and how a capture compares to another
# ---------------------------------------------------------------------------------------------

_SKIP_FIELDS = {"oid", "schema_oid", "type_oid", "owner_table", "deps", "users", "readable",
                "last_value", "extension", "array_oid", "num"}


def _norm(value: Any) -> Any:
    """A comparable, OID-free form of a captured object."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple((f.name, _norm(getattr(value, f.name))) for f in dataclasses.fields(value)
                     if f.name not in _SKIP_FIELDS)
    if isinstance(value, tuple | list):
        return tuple(_norm(v) for v in value)
    return value


def named(state: CatalogState) -> dict[tuple[str, ...], Any]:
    """Every object of `state` by kind and name, in an OID-free comparable form."""
    out: dict[tuple[str, ...], Any] = {}
    for r in state.relations.values():
        seq = r.sequence
        owner = None
        if seq is not None and seq.owner_table:
            tab = state.relations.get(seq.owner_table)
            owner = (tab.schema, tab.name, seq.owner_column, seq.owner_kind) if tab else \
                ("?", "?", seq.owner_column, seq.owner_kind)
        # Column order is left out: a dropped column can only come back at the end (the
        # reverse script warns about that), and nothing else changes the order.
        by_name = dataclasses.replace(r, columns=tuple(sorted(r.columns, key=lambda c: c.name)))
        out[("relation", r.schema, r.name)] = (_norm(by_name), owner)
    for f in state.functions.values():
        out[("function", f.schema, f.name, f.args)] = _norm(f)
    for t in state.types.values():
        by_attr = dataclasses.replace(t, attributes=tuple(sorted(t.attributes,
                                                                key=lambda c: c.name)))
        out[("type", t.schema, t.name)] = _norm(by_attr)
    for s in state.schemas.values():
        out[("schema", s.name)] = _norm(s)
    for p in state.publications.values():
        out[("publication", p.name)] = _norm(p)
    for e in state.extensions.values():
        out[("extension", e.name)] = _norm(e)
    return out


def describe_key(key: tuple[str, ...]) -> str:
    kind, *rest = key
    if kind == "function":
        return f"function {rest[0]}.{rest[1]}({rest[2]})"
    return f"{kind} {'.'.join(rest)}"


def differences(expected: CatalogState, actual: CatalogState,
                absent: Iterable[tuple[str, ...]] = ()) -> list[str]:
    """How `actual` differs from `expected`, one line per difference (empty: equal); `absent`
    names objects that must not exist in `actual` (what the migration created)."""
    want, have = named(expected), named(actual)
    out: list[str] = []
    for key, value in want.items():
        if key not in have:
            out.append(f"{describe_key(key)} is missing")
        elif have[key] != value:
            out.append(f"{describe_key(key)} differs: {_first_difference(value, have[key])}")
    for key in absent:
        if key in have and key not in want:
            out.append(f"{describe_key(key)} still exists (the migration created it)")
    if set(expected.default_acls) != set(actual.default_acls):
        gone = set(expected.default_acls) - set(actual.default_acls)
        extra = set(actual.default_acls) - set(expected.default_acls)
        for d in sorted(gone | extra, key=repr):
            where = f" in schema {d.schema}" if d.schema else ""
            verb = "missing" if d in gone else "unexpected"
            out.append(f"default privileges of {d.role}{where} on {d.objtype}: {verb} "
                       f"{list(d.acl)}")
    return out


def _first_difference(want: Any, have: Any, path: str = "") -> str:
    if isinstance(want, tuple) and isinstance(have, tuple):
        if want and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)
                        for x in want) and len(want) == len(have):
            for (k, a), (_, b) in zip(want, have, strict=False):
                if a != b:
                    return _first_difference(a, b, f"{path}.{k}" if path else k)
        if len(want) != len(have):
            return f"{path or 'value'}: {len(want)} item(s) expected, {len(have)} found"
        for i, (a, b) in enumerate(zip(want, have, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return f"{path or 'value'}: expected {_short(want)}, found {_short(have)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------

_CLASSES: dict[str, type] = {c.__name__: c for c in (
    Column, Constraint, Index, Trigger, Policy, Membership, Sequence, Relation, Function, Type,
    Schema, PublicationTable, Publication, Extension, DefaultAcl)}


def to_json(state: CatalogState) -> dict[str, Any]:
    def enc(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: enc(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [enc(x) for x in v]
        return v

    return {"relations": [enc(v) for v in state.relations.values()],
            "functions": [enc(v) for v in state.functions.values()],
            "types": [enc(v) for v in state.types.values()],
            "schemas": [enc(v) for v in state.schemas.values()],
            "publications": [enc(v) for v in state.publications.values()],
            "extensions": [enc(v) for v in state.extensions.values()],
            "default_acls": [enc(v) for v in state.default_acls],
            "watermark": state.watermark, "current_user": state.current_user}


def _dec(cls: type, data: dict[str, Any]) -> Any:
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name not in hints:
            continue
        kwargs[name] = _dec_value(str(hints[name]), value)
    return cls(**kwargs)


def _dec_value(hint: str, value: Any) -> Any:
    if value is None:
        return None
    for cname, cls in _CLASSES.items():
        if hint == cname or hint.startswith(f"{cname} |"):
            return _dec(cls, value)
        if hint.startswith(f"tuple[{cname},"):
            return tuple(_dec(cls, v) for v in value)
    if hint.startswith("tuple[tuple["):
        return tuple(tuple(x) for x in value)
    if hint.startswith("tuple["):
        return tuple(value)
    return value


def from_json(data: Mapping[str, Any]) -> CatalogState:
    def by_oid(cls: type, items: list[dict[str, Any]]) -> dict[int, Any]:
        objs = [_dec(cls, i) for i in items]
        return {o.oid: o for o in objs}

    return CatalogState(
        by_oid(Relation, data.get("relations", [])), by_oid(Function, data.get("functions", [])),
        by_oid(Type, data.get("types", [])), by_oid(Schema, data.get("schemas", [])),
        by_oid(Publication, data.get("publications", [])),
        by_oid(Extension, data.get("extensions", [])),
        tuple(_dec(DefaultAcl, d) for d in data.get("default_acls", [])),
        int(data.get("watermark", 0)), str(data.get("current_user", "")))


# ---------------------------------------------------------------------------------------------
# Resolving names again (verification, after the rollback)
# ---------------------------------------------------------------------------------------------

_RESOLVE_SQL = """
SELECT 'rel', c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN unnest(%(rs)s::text[], %(rn)s::text[]) AS q(s, r) ON n.nspname = q.s AND c.relname = q.r
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT 'type', t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  JOIN unnest(%(ts)s::text[], %(tn)s::text[]) AS q(s, r) ON n.nspname = q.s AND t.typname = q.r
UNION ALL
SELECT 'func', p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN unnest(%(fs)s::text[], %(fn)s::text[], %(fa)s::text[]) AS q(s, r, a)
    ON n.nspname = q.s AND p.proname = q.r AND pg_get_function_identity_arguments(p.oid) = q.a
UNION ALL
SELECT 'schema', n.oid FROM pg_namespace n WHERE n.nspname = ANY (%(ns)s::text[])
UNION ALL
SELECT 'pub', p.oid FROM pg_publication p WHERE p.pubname = ANY (%(ps)s::text[])
UNION ALL
SELECT 'ext', e.oid FROM pg_extension e WHERE e.extname = ANY (%(es)s::text[])
"""


def scope_of_names(conn: psycopg.Connection, keys: Iterable[tuple[str, ...]]) -> Scope:
    """The OIDs the objects named by `keys` (see `named`) have now."""
    rs: list[str] = []
    rn: list[str] = []
    ts: list[str] = []
    tn: list[str] = []
    fs: list[str] = []
    fn: list[str] = []
    fa: list[str] = []
    ns: list[str] = []
    ps: list[str] = []
    es: list[str] = []
    for key in keys:
        kind = key[0]
        if kind == "relation":
            rs.append(key[1])
            rn.append(key[2])
        elif kind == "type":
            ts.append(key[1])
            tn.append(key[2])
        elif kind == "function":
            fs.append(key[1])
            fn.append(key[2])
            fa.append(key[3])
        elif kind == "schema":
            ns.append(key[1])
        elif kind == "publication":
            ps.append(key[1])
        elif kind == "extension":
            es.append(key[1])
    scope = Scope()
    for kind, oid in conn.execute(_RESOLVE_SQL, {"rs": rs, "rn": rn, "ts": ts, "tn": tn,
                                                 "fs": fs, "fn": fn, "fa": fa, "ns": ns,
                                                 "ps": ps, "es": es}).fetchall():
        scope.add(kind, int(oid))
    return scope
