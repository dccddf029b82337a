"""What a connection knows of the server's types: those it meets for the first time are
introspected, and users set codecs on them (``Connection.set_type_codec`` and friends).

``Connection`` keeps the methods, which delegate here: users and instrumentation find them
on the class, and pipelines call ``Connection._introspect_types`` (asyncpg's name) so that a
subclass overriding it sees every introspection.
"""

from __future__ import annotations

import decimal
import typing

from . import exceptions

if typing.TYPE_CHECKING:
    from .connection import Connection

# One row per type: what its codec is built from (element, base, subtype or range type in
# `related`; attributes for composites). Everything travels as text, so a custom codec a
# user set on oid or int types cannot get in the way.
_INTROSPECT_SQL = """
SELECT t.oid::text, t.typname::text, t.typtype::text,
       (CASE
         WHEN t.typtype = 'd' THEN t.typbasetype
         WHEN t.typtype = 'r' THEN
           (SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid)
         WHEN t.typtype = 'm' THEN
           (SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid)
         WHEN t.typcategory = 'A' THEN t.typelem
         ELSE 0
       END)::text AS related,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) AS attr_names,
       ARRAY(SELECT a.atttypid::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) AS attr_oids,
       (SELECT n.nspname::text FROM pg_catalog.pg_namespace n
        WHERE n.oid = t.typnamespace) AS schema
FROM pg_catalog.pg_type t
WHERE t.oid::text = ANY($1::text[])
"""
# before PostgreSQL 14 there are no multiranges (and no pg_range.rngmultitypid)
_INTROSPECT_SQL_13 = _INTROSPECT_SQL.replace(
    """WHEN t.typtype = 'm' THEN
           (SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid)
         """,
    "",
)


# SQL's names of builtin types, as set_type_codec(schema='pg_catalog') accepts them
_SQL_STANDARD_TYPE_NAMES = {
    "smallint": "int2",
    "int": "int4",
    "integer": "int4",
    "bigint": "int8",
    "decimal": "numeric",
    "real": "float4",
    "double precision": "float8",
    "boolean": "bool",
    "timestamp with timezone": "timestamptz",
    "timestamp with time zone": "timestamptz",
    "timestamp without timezone": "timestamp",
    "timestamp without time zone": "timestamp",
    "time with timezone": "timetz",
    "time with time zone": "timetz",
    "time without timezone": "time",
    "time without time zone": "time",
    "character": "bpchar",
    "character varying": "varchar",
    "bit varying": "varbit",
}


def _as_text(value):
    return value if isinstance(value, str) else str(value)


# set_builtin_type_codec(format='text'): the builtin codecs' text forms, as Python pairs
_TEXT_CODECS = {
    "numeric": (_as_text, decimal.Decimal),
    "int2": (_as_text, int),
    "int4": (_as_text, int),
    "int8": (_as_text, int),
    "float4": (_as_text, float),
    "float8": (_as_text, float),
    "text": (str, str),
    "varchar": (str, str),
    "bpchar": (str, str),
    "name": (str, str),
}


async def set_type_codec(con: Connection, typename, schema, encoder, decoder, format) -> None:
    """See ``Connection.set_type_codec``."""
    if format not in ("text", "binary", "tuple"):
        raise exceptions.InterfaceError(
            f"invalid format {format!r}: expected 'text', 'binary' or 'tuple'"
        )
    oid, kind, elem = await type_by_name(con, typename, schema)
    if kind == "c":
        if format != "tuple":
            raise exceptions.UnsupportedClientFeatureError(
                "only tuple-format codecs can be used on composite types",
                hint="Use `set_type_codec(..., format='tuple')` and pass/interpret "
                "data as a Python tuple.",
            )
        # the attributes' codecs must be known to build the tuple
        await con._introspect_types([oid], None)
    elif kind not in ("b", "d", "e") or elem:
        raise exceptions.InterfaceError(
            f"cannot use custom codec on type {schema}.{typename}: "
            "it is neither a scalar type nor a composite type"
        )
    if kind == "d":
        raise exceptions.UnsupportedClientFeatureError(
            "custom codecs on domain types are not supported",
            hint="Set the codec on the base type.",
            detail="PostgreSQL does not distinguish domains from their base types in "
            "query results at the protocol level.",
        )
    con._protocol.set_custom_codec(oid, typename, schema, encoder, decoder, format)
    _codecs_changed(con)


async def reset_type_codec(con: Connection, typename, schema) -> None:
    """See ``Connection.reset_type_codec``."""
    oid, _kind, _elem = await type_by_name(con, typename, schema)
    con._protocol.reset_custom_codec(oid)
    _codecs_changed(con)


async def set_builtin_type_codec(con: Connection, typename, schema, codec_name, format) -> None:
    """See ``Connection.set_builtin_type_codec``."""
    oid, _kind, _elem = await type_by_name(con, typename, schema)
    name = _SQL_STANDARD_TYPE_NAMES.get(codec_name.lower(), codec_name)
    proto = con._protocol
    if format == "text":
        pair = _TEXT_CODECS.get(name)
        if pair is None:
            raise exceptions.UnsupportedClientFeatureError(
                f"the builtin codec {codec_name!r} has no text format here"
            )
        proto.set_custom_codec(oid, typename, schema, pair[0], pair[1], "text")
    elif not proto.set_builtin_alias(oid, typename, name):
        raise exceptions.InterfaceError(f"unknown builtin codec: {codec_name!r}")
    _codecs_changed(con)


def _codecs_changed(con: Connection) -> None:
    # composites, arrays and ranges built on the changed type are introspected anew,
    # and no cached statement keeps the old codecs
    con._protocol.clear_types()
    con._drop_global_statement_cache()


async def type_by_name(con: Connection, typename, schema):
    """(oid, typtype, element oid) of ``schema.typename``; in ``pg_catalog`` the SQL
    standard's names (``integer``, ``double precision``...) are known too, and the
    builtin types count as scalars (``point`` and ``name`` have elements)."""
    builtin = schema == "pg_catalog" and not typename.endswith("[]")
    if builtin:
        name = _SQL_STANDARD_TYPE_NAMES.get(typename.lower(), typename)
    else:
        name = typename
    row = await con.fetchrow(
        "SELECT t.oid::text, t.typtype::text, t.typelem::text, t.typcategory::text "
        "FROM pg_catalog.pg_type t "
        "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
        "WHERE t.typname = $1 AND n.nspname = $2",
        name,
        schema,
    )
    if row is None:
        raise ValueError(f"unknown type: {schema}.{typename}")
    elem = int(row[2])
    if builtin and row[3] != "A":
        elem = 0
    return int(row[0]), row[1], elem


async def introspect_types(con: Connection, oids, timeout, fetch=None) -> None:
    """See ``Connection._introspect_types``."""
    sql = _INTROSPECT_SQL if con.get_server_version() >= (14,) else _INTROSPECT_SQL_13
    proto = con._protocol
    found = {}
    pending = set(oids)
    while pending:
        arg = [str(o) for o in sorted(pending)]
        if fetch is None:
            rows = await con.fetch(sql, arg, timeout=timeout)
        else:
            rows = await fetch(sql, arg)
        pending = set()
        for oid, name, kind, related, attr_names, attr_oids, schema in rows:
            oid, related = int(oid), int(related or 0)
            attr_oids = [int(a) for a in attr_oids]
            found[oid] = (oid, name, kind, related, list(attr_names), attr_oids, schema)
            for dep in [related, *attr_oids]:
                if dep and dep not in found and not proto.has_codec(dep):
                    pending.add(dep)
        pending -= set(found)
    ordered, seen = [], set()

    def visit(oid):
        info = found.get(oid)
        if info is None or oid in seen:
            return
        seen.add(oid)
        for dep in [info[3], *info[5]]:
            visit(dep)
        ordered.append(info)

    for oid in found:
        visit(oid)
    proto.register_types(ordered)
