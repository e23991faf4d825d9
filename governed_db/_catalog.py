"""A snapshot of the database's relations and columns, for provenance and lineage (no I/O here).

The snapshot is loaded with one query (``CATALOG_QUERY``) when a governed connection opens and
reloaded after DDL ran through it or when a result names a table OID it does not know. It is
shared per database by every connection of the process.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

__all__ = ["CATALOG_QUERY", "Catalog", "FunctionInfo", "Relation", "catalog_for",
           "next_catalog_version", "store_catalog"]

CATALOG_QUERY = b"""
SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text,
       array_agg(a.attnum::int4 ORDER BY a.attnum), array_agg(a.attname::text ORDER BY a.attnum),
       CASE WHEN c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            THEN pg_catalog.pg_get_viewdef(c.oid) END
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname <> 'pg_toast'
  AND (n.nspname NOT LIKE 'pg\\_temp%' OR n.oid = pg_catalog.pg_my_temp_schema())
GROUP BY c.oid, n.nspname, c.relname, c.relkind
UNION ALL
SELECT p.oid::int8, n.nspname::text, p.proname::text, 'F', NULL,
       ARRAY[l.lanname::text, p.xmin::text, pg_catalog.pg_get_function_arguments(p.oid),
             coalesce(pg_catalog.pg_get_function_result(p.oid), 'void'), p.prokind::text,
             (p.prosqlbody IS NOT NULL)::text,
             coalesce(pg_catalog.array_to_string(p.proconfig, E'\x1f'), '')],
       p.prosrc
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT i.indrelid::int8, NULL, NULL, 'U', i.indkey::int2[]::int4[], NULL, NULL
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
UNION ALL
SELECT c.oid::int8, NULL, NULL, 'W', NULL, NULL, NULL
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'v')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND (c.relhasrules
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid
                  AND NOT t.tgisinternal AND t.tgtype::int4 & 28 <> 0)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.contype = 'f'
                  AND k.confrelid = c.oid
                  AND (k.confdeltype NOT IN ('a', 'r') OR k.confupdtype NOT IN ('a', 'r'))))
UNION ALL
SELECT NULL, NULL, p.proname::text, 'B', NULL, NULL, NULL
FROM (SELECT DISTINCT proname FROM pg_catalog.pg_proc
      WHERE pronamespace = 'pg_catalog'::pg_catalog.regnamespace) AS p
UNION ALL
SELECT NULL, NULL, s::text, 'S', NULL, NULL, NULL
FROM unnest(pg_catalog.current_schemas(true)) AS s
UNION ALL
SELECT DISTINCT NULL::int8, NULL::text, o.oprname::text, 'O', NULL::int4[], NULL::text[], NULL::text
FROM pg_catalog.pg_operator o
WHERE o.oprnamespace <> 'pg_catalog'::pg_catalog.regnamespace
UNION ALL
SELECT NULL, NULL, pg_catalog.current_setting('transaction_isolation'), 'X', NULL, NULL,
       (pg_catalog.txid_current_if_assigned() IS NOT NULL)::text
UNION ALL
SELECT NULL, NULL, n.name, 'N', NULL, NULL, NULL
FROM (SELECT typname::text FROM pg_catalog.pg_type
      UNION SELECT conname::text FROM pg_catalog.pg_constraint
      UNION SELECT relname::text FROM pg_catalog.pg_class WHERE relkind IN ('i', 'I', 'S')
      UNION SELECT nspname::text FROM pg_catalog.pg_namespace) AS n(name)
"""

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
# The C functions behind the constructors of user-defined range and multirange types (an
# allow-list, by the symbol in ``pg_proc.prosrc``): they build a value from their arguments
# and read nothing else. Only a superuser can create a ``LANGUAGE internal`` function, and its
# symbol decides what it does, whatever the function is called.
BUILTIN_CONSTRUCTORS = frozenset({
    "range_constructor2", "range_constructor3",
    "multirange_constructor0", "multirange_constructor1", "multirange_constructor2"})
REFRESH_SECONDS = 60.0


@attrs.frozen(kw_only=True)
class Relation:
    """A table, view, materialized view, partitioned or foreign table."""

    oid: int
    schema: str
    name: str
    kind: str
    columns: tuple[str, ...]
    attnums: tuple[int, ...]
    viewdef: str | None = None

    @property
    def qualname(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_view(self) -> bool:
        return self.kind in ("v", "m")

    def column_by_attnum(self, attnum: int) -> str | None:
        try:
            return self.columns[self.attnums.index(attnum)]
        except ValueError:
            return None


@attrs.frozen(kw_only=True)
class FunctionInfo:
    """A user-defined function or procedure, with what its body analysis needs.

    ``xmin`` is the row version of its ``pg_proc`` row: ``CREATE OR REPLACE`` changes it, so
    body analyses cached by ``(oid, xmin)`` never describe an older definition.
    """

    oid: int
    schema: str
    name: str
    language: str
    xmin: str
    arguments: str
    result: str
    prokind: str
    source: str | None
    sql_body: bool = False  # a SQL-standard body (BEGIN ATOMIC / RETURN): no text in prosrc
    # ``CREATE FUNCTION ... SET name = value``: (name, value) in force while it runs
    config: tuple[tuple[str, str], ...] = ()


def _proconfig(text: Any) -> tuple[tuple[str, str], ...]:
    """``pg_proc.proconfig`` entries (``name=value``, joined by U+001F) as pairs."""
    out = []
    for entry in str(text or "").split("\x1f"):
        name, sep, value = entry.partition("=")
        if sep:
            out.append((name.strip().lower(), value))
    return tuple(out)


class Catalog:
    """Relations by OID and by name, the session's schema search path, user functions.

    Also what judging a write's effect in advance needs: user function definitions (by name,
    every overload), each table's unique keys (non-partial, plain columns), and the tables
    whose writes run more than the statement (user triggers, rules, cascading foreign keys).
    """

    def __init__(self, relations: Iterable[Relation], search_path: Sequence[str],
                 user_functions: Iterable[str], version: int = 0, *,
                 builtin_functions: Iterable[str] = (),
                 user_operators: Iterable[str] = (),
                 functions: Iterable[FunctionInfo] = (),
                 unique_keys: Iterable[tuple[int, Sequence[int]]] = (),
                 side_effect_tables: Iterable[int] = (),
                 other_names: Iterable[str] = (),
                 isolation: str = "read committed", tx_wrote: bool = False) -> None:
        self.by_oid = {r.oid: r for r in relations}
        self.by_name = {(r.schema, r.name): r for r in self.by_oid.values()}
        self.search_path = tuple(search_path)
        self.user_functions = frozenset(user_functions)
        self.builtin_functions = frozenset(builtin_functions)
        # operator symbols defined outside pg_catalog (a user "+" may shadow the built-in one)
        self.user_operators = frozenset(user_operators)
        by_fname: dict[str, list[FunctionInfo]] = {}
        for fn in functions:
            by_fname.setdefault(fn.name.lower(), []).append(fn)
        self.functions = {k: tuple(v) for k, v in by_fname.items()}
        # Constructors PostgreSQL itself creates for CREATE TYPE ... AS RANGE: every overload
        # is the server's own C code (see BUILTIN_CONSTRUCTORS), so the name is a built-in.
        constructors = frozenset(
            name for name, fns in self.functions.items()
            if all(fn.language == "internal" and fn.source in BUILTIN_CONSTRUCTORS
                   for fn in fns))
        self.user_functions = self.user_functions - constructors
        self.builtin_functions = self.builtin_functions | constructors
        keys: dict[int, list[frozenset[str]]] = {}
        for oid, attnums in unique_keys:
            rel = self.by_oid.get(oid)
            if rel is None:
                continue
            cols = [rel.column_by_attnum(a) for a in attnums]
            if cols and all(c is not None for c in cols):
                keys.setdefault(oid, []).append(frozenset(str(c) for c in cols))
        self.unique_keys = {k: tuple(v) for k, v in keys.items()}
        self.side_effect_tables = frozenset(side_effect_tables)
        self.version = version
        self.other_names = frozenset(other_names)  # types, constraints, indexes, schemas
        self._identifiers: frozenset[str] | None = None
        self.loaded_at = time.monotonic()
        self._view_lineage: dict[int, Any] = {}
        self.lock = threading.Lock()
        # This session's temporary relations (pg_temp_N) are in the snapshot: it is not shared.
        self.has_temp = any(r.schema.startswith("pg_temp") for r in self.by_oid.values())
        # Objects results named that this snapshot does not know (table OIDs, columns), each
        # asking for one reload; carried to the next snapshot while still unknown there.
        self.absent: set[Any] = set()
        # How the query that read it saw the catalog (its row 'X'): the transaction's
        # isolation level, and whether that transaction had written anything (an xid): what
        # it read may then be uncommitted (DDL later rolled back).
        self.isolation = isolation
        self.tx_wrote = tx_wrote

    @property
    def identifiers(self) -> frozenset[str]:
        """Every catalog name a server message may quote (relations, columns, schemas,
        functions, types, constraints, indexes), lower-cased: error text may echo them."""
        if self._identifiers is None:
            names: set[str] = set(self.user_functions) | self.builtin_functions
            for rel in self.by_oid.values():
                names.add(rel.name)
                names.add(rel.schema)
                names.update(rel.columns)
            names.update(self.search_path)
            names.update(self.other_names)
            self._identifiers = frozenset(n.lower() for n in names)
        return self._identifiers

    def fresh(self) -> bool:
        """Younger than REFRESH_SECONDS: schema changes made by other sessions (a renamed
        column, a new table) are picked up within that window. (The cursor's statement hook
        inlines this test: ``GovernedCursorMixin._start_query``.)"""
        return time.monotonic() - self.loaded_at < REFRESH_SECONDS

    @property
    def old_view(self) -> bool:
        """Read under REPEATABLE READ / SERIALIZABLE: the catalog as of the transaction's
        snapshot, while the server resolves names with the catalog as it is now."""
        return self.isolation in ("repeatable read", "serializable")

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]], version: int = 0) -> Catalog:
        rels, path, funcs, builtins, ops, names_ = [], [], [], [], [], []
        infos: list[FunctionInfo] = []
        keys: list[tuple[int, Sequence[int]]] = []
        side: list[int] = []
        isolation, tx_wrote = "", True  # (not reported: judged the most cautious way)
        for oid, schema, name, kind, attnums, names, viewdef in rows:
            if kind == "O":
                ops.append(str(name))
            elif kind == "N":
                names_.append(str(name))
            elif kind == "X":
                isolation, tx_wrote = str(name), viewdef != "false"
            elif kind == "F":
                funcs.append(str(name).lower())
                if oid is not None and names:
                    meta = list(names) + [None] * (7 - len(names))
                    infos.append(FunctionInfo(
                        oid=int(oid), schema=str(schema), name=str(name),
                        language=str(meta[0]), xmin=str(meta[1]), arguments=str(meta[2] or ""),
                        result=str(meta[3] or "void"), prokind=str(meta[4] or "f"),
                        source=viewdef, sql_body=meta[5] == "true",
                        config=_proconfig(meta[6])))
            elif kind == "U":
                keys.append((int(oid), tuple(int(a) for a in attnums or ())))
            elif kind == "W":
                side.append(int(oid))
            elif kind == "B":
                builtins.append(str(name).lower())
            elif kind == "S":
                path.append(str(name))
            else:
                rels.append(Relation(oid=int(oid), schema=schema, name=name, kind=kind,
                                     columns=tuple(names), attnums=tuple(attnums),
                                     viewdef=viewdef))
        return cls(rels, path, funcs, version, builtin_functions=builtins,
                   user_operators=ops, functions=infos, unique_keys=keys,
                   side_effect_tables=side, other_names=names_,
                   isolation=isolation, tx_wrote=tx_wrote)

    def carry_absent(self, older: Catalog) -> None:
        """Keep what ``older`` was asked about and this (newer) snapshot still does not know."""
        for what in older.absent:
            oid = what if isinstance(what, int) else what[0]
            rel = self.by_oid.get(oid)
            if rel is None or (not isinstance(what, int) and len(what) == 2
                               and rel.column_by_attnum(what[1]) is None):
                self.absent.add(what)
            elif not isinstance(what, int) and len(what) == 3 and what[1] in rel.columns:
                self.absent.add(what)  # the name the text used is still not the column's

    def resolve(self, name: str) -> Relation | None:
        """The relation an (optionally schema-qualified) name means on this session."""
        if "." in name:
            schema, _, rel = name.partition(".")
            if schema == "pg_temp":  # the alias of this session's temporary schema
                schema = next((s for s in self.search_path if s.startswith("pg_temp_")), schema)
            return self.by_name.get((schema, rel))
        for schema in self.search_path or ("pg_catalog", "public"):
            found = self.by_name.get((schema, name))
            if found is not None:
                return found
        return None

    def view_lineage(self, rel: Relation, compute: Any) -> Any:
        """Memoized lineage of a view's output columns (``compute(rel)`` on first use)."""
        try:
            return self._view_lineage[rel.oid]
        except KeyError:
            pass
        self._view_lineage[rel.oid] = None  # recursion guard: a view cycle is unknown lineage
        result = compute(rel)
        self._view_lineage[rel.oid] = result
        return result


_catalogs: dict[tuple[Any, ...], Catalog] = {}
_catalogs_lock = threading.Lock()


_versions = itertools.count(1)


def next_catalog_version() -> int:
    """Process-unique snapshot versions: caches keyed by version never mix two snapshots."""
    return next(_versions)


def catalog_for(key: tuple[Any, ...]) -> Catalog | None:
    return _catalogs.get(key)


def store_catalog(key: tuple[Any, ...], catalog: Catalog) -> None:
    with _catalogs_lock:
        _catalogs[key] = catalog


def invalidate(key: tuple[Any, ...]) -> None:
    with _catalogs_lock:
        _catalogs.pop(key, None)


def invalidate_database(key: tuple[Any, ...]) -> None:
    """DDL ran on the database of ``key`` (host, port, dbname, ...): no connection of this
    process picks up a shared snapshot taken before it (for any user or search_path), e.g. a
    connection opened right after another one created a table."""
    with _catalogs_lock:
        for other in [k for k in _catalogs if k[:3] == key[:3]]:
            del _catalogs[other]
