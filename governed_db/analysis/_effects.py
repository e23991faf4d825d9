"""What a statement does beyond its own text: function bodies, and bounds known in advance.

Two questions the guardrails ask about a row-changing statement (no I/O here; the catalog
snapshot carries what the server said):

* **What do the functions it calls do?** A parser sees ``SELECT purge_users()`` as a read.
  The bodies of SQL and PL/pgSQL functions are text in ``pg_proc.prosrc`` that libpg_query
  parses (``pgparse.parse`` / ``pgparse.parse_pgsql``), so their writes, drops, setting
  changes and function calls count as the caller's (:func:`with_function_effects`).
  A body the analyzer cannot see through — another language, dynamic ``EXECUTE``, a
  SQL-standard body, a parse failure — is *opaque*: the statement may write anything.
  Analyses are cached by ``(oid, xmin)`` of the ``pg_proc`` row, so ``CREATE OR REPLACE``
  is never judged by an older body.
* **Is its effect bounded before it runs?** (:func:`static_bound`) Only a few shapes are:
  ``INSERT ... VALUES`` (n rows), and ``UPDATE``/``DELETE`` whose WHERE pins every column
  of a unique key to a constant or a parameter — on a table with no user trigger, rule or
  cascading foreign key, calling no user function, without data-modifying CTEs. Everything
  else (``WHERE $1``, ``WHERE 1 IN (1)``, ``MERGE``, ``INSERT ... SELECT``, ``EXECUTE``,
  writable CTEs, functions, cascades) runs under the exact blast radius, where the rows it
  really touched are counted. Deciding "bounded" conservatively is the point: a shape not
  listed here costs a savepoint, never a bypass.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from .._catalog import BUILTIN_CONSTRUCTORS
from ._extract import extract_all
from ._facts import StatementFacts
from ._normalize import lexing_depends_on_scs
from ._plpgsql import PLPGSQL_UNDERSTOOD, embedded_sql, parse_plpgsql, plpgsql_nodes

__all__ = ["BodyEffects", "body_effects", "static_bound", "unknown_functions",
           "with_function_effects"]

# Statement kinds that change data or schema when they appear inside a body.
_WRITE_KINDS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "COPY", "CALL",
                          "DO", "CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "COMMENT",
                          "REFRESH", "CLUSTER", "REINDEX", "VACUUM", "LOCK", "NOTIFY",
                          "SET", "RESET", "DISCARD", "EXECUTE", "UNKNOWN", "SECURITY LABEL",
                          "IMPORT", "REASSIGN"})
_DML = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")


@attrs.frozen(kw_only=True)
class BodyEffects:
    """What running a function's body does (transitively through the user functions it calls)."""

    kinds: frozenset[str] = frozenset()
    row_kinds: frozenset[str] = frozenset()  # row operations by effect (MERGE actions, upserts)
    writes: frozenset[str] = frozenset()
    reads: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    unbounded: frozenset[str] = frozenset()
    settings: tuple[tuple[str, str | None], ...] = ()
    read_write_requested: bool = False
    opaque: tuple[str, ...] = ()
    # A body the server could lex otherwise with standard_conforming_strings off (see
    # lexing_depends_on_scs): its effects hold only while the session has it on.
    lexing_depends_on_scs: bool = False

    @property
    def may_write(self) -> bool:
        return bool(self.opaque or self.writes or self.kinds & _WRITE_KINDS)

    def merge(self, other: BodyEffects) -> BodyEffects:
        return BodyEffects(
            kinds=self.kinds | other.kinds, row_kinds=self.row_kinds | other.row_kinds,
            writes=self.writes | other.writes,
            reads=self.reads | other.reads, functions=self.functions | other.functions,
            unbounded=self.unbounded | other.unbounded,
            settings=self.settings + tuple(s for s in other.settings if s not in self.settings),
            read_write_requested=self.read_write_requested or other.read_write_requested,
            opaque=self.opaque + tuple(o for o in other.opaque if o not in self.opaque),
            lexing_depends_on_scs=self.lexing_depends_on_scs or other.lexing_depends_on_scs)


_NONE = BodyEffects()
_cache: dict[tuple[int, str], BodyEffects] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 4096


def _from_facts(facts: Iterable[StatementFacts]) -> BodyEffects:
    out = _NONE
    for f in facts:
        out = out.merge(BodyEffects(
            kinds=f.kinds, row_kinds=f.row_kinds, writes=f.writes, reads=f.reads,
            functions=f.functions,
            unbounded=f.unbounded_writes, settings=f.settings,
            read_write_requested=f.read_write_requested, opaque=f.opaque_reasons))
    return out


def _parse_sql(text: str) -> BodyEffects:
    import pgparse

    try:
        parsed = pgparse.parse(text)
    except Exception:  # noqa: BLE001 - unparseable here: we cannot know what it does
        return BodyEffects(opaque=("a function body the analyzer cannot parse",))
    return _from_facts(extract_all(text, parsed))


_DYNAMIC = {"PLpgSQL_stmt_dynexecute": "dynamic EXECUTE",
            "PLpgSQL_stmt_dynfors": "a loop over dynamic SQL",
            "PLpgSQL_stmt_call": "CALL inside a body", "PLpgSQL_stmt_commit": "COMMIT",
            "PLpgSQL_stmt_rollback": "ROLLBACK"}


# What a function body may contain and still be judged by its SQL: the DO allow-list, plus
# RETURN NEXT / RETURN QUERY (a dynamic RETURN QUERY EXECUTE carries a dynquery: opaque).
_BODY_UNDERSTOOD = PLPGSQL_UNDERSTOOD | {"PLpgSQL_stmt_return_next", "PLpgSQL_stmt_return_query"}


def _plpgsql(fn: Any) -> BodyEffects:
    returns = "trigger" if fn.result in ("trigger", "event_trigger") else fn.result
    tree = parse_plpgsql(fn.source or "", arguments=fn.arguments, returns=returns)
    if tree is None:
        return BodyEffects(opaque=("a PL/pgSQL body the analyzer cannot parse",))
    out = _NONE
    for key, value in plpgsql_nodes(tree):
        if key in _DYNAMIC:
            out = out.merge(BodyEffects(opaque=(f"{_DYNAMIC[key]} in a PL/pgSQL body",)))
        elif key == "dynquery":
            out = out.merge(BodyEffects(opaque=("dynamic SQL in a PL/pgSQL body",)))
        elif key not in _BODY_UNDERSTOOD:
            # Allow-list, as for DO bodies: a construct not judged here is not seen.
            out = out.merge(BodyEffects(opaque=(
                f"a PL/pgSQL construct the analyzer does not judge ({key[8:]})",)))
        elif key == "PLpgSQL_expr" and isinstance(value, dict):
            out = out.merge(_parse_sql(embedded_sql(value)))
    return out



def body_effects(fn: Any) -> BodyEffects:
    """The effects of one function's own body (not of the functions it calls), cached."""
    key = (int(fn.oid), str(fn.xmin))
    hit = _cache.get(key)
    if hit is not None:
        return hit
    lang = fn.language
    if fn.sql_body or (lang == "sql" and not (fn.source or "").strip()):
        out = BodyEffects(opaque=("a SQL-standard function body",))
    elif lang == "sql":
        out = _parse_sql(fn.source or "")
    elif lang == "plpgsql":
        out = _plpgsql(fn)
    elif lang == "internal" and fn.source in BUILTIN_CONSTRUCTORS:
        out = _NONE  # a range/multirange constructor: the server's own code, reads nothing
    else:
        out = BodyEffects(opaque=(f"a function written in language {lang}",))
    config = getattr(fn, "config", ())
    depends = lang in ("sql", "plpgsql") and lexing_depends_on_scs(fn.source or "")
    if depends:
        out = attrs.evolve(out, lexing_depends_on_scs=True)
    if depends and any(name == "standard_conforming_strings"
                       and value.lower() not in ("on", "true", "1") for name, value in config):
        # CREATE FUNCTION ... SET standard_conforming_strings = off: the server lexes the body
        # with it off, this analysis with it on; a backslash in a plain string can hide a
        # statement from one of them ('\' -- '; DELETE ...). Effect unknown.
        out = BodyEffects(opaque=("a body lexed with standard_conforming_strings off",))
    own = tuple(c for c in config if c[0].startswith("governed_db"))
    if own:
        # CREATE FUNCTION ... SET governed_db.identity.tenant = '...': while it runs, its
        # body (and RLS) sees another identity; restored at exit, so no read-back sees it.
        # Judged as a SET of those settings (other SET clauses, such as the search_path of a
        # SECURITY DEFINER function, are local to it and harmless).
        out = out.merge(BodyEffects(settings=own))
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = out
    return out


def _proconfig_path(value: str) -> tuple[str, ...] | None:
    """The schemas of a ``search_path`` SET clause as pg_proc.proconfig stores it
    (``hidden, public``, ``"My Schema", "$user"``); None when it cannot be read."""
    out: list[str] = []
    for part in value.split(","):
        item = part.strip()
        if len(item) >= 2 and item[0] == item[-1] == '"':
            item = item[1:-1].replace('""', '"')
        elif '"' in item:
            return None  # a quoted name holding a comma: not split here
        else:
            item = item.lower()
        if item:
            out.append(item)
    return tuple(out)


def _resolve_in(name: str, path: Sequence[str], catalog: Any) -> str | None:
    """``name`` (unqualified) as the server resolves it through ``path`` (the SET clause's
    schemas, with pg_temp and pg_catalog searched first where the clause does not list them):
    ``schema.name``, or None when ambiguous (``$user`` could be a schema that has it)."""
    by_name = catalog.by_name
    temp = next((sch for sch in catalog.search_path if sch.startswith("pg_temp_")), None)
    order: list[str] = []
    if "pg_temp" not in path and temp is not None:
        order.append(temp)
    if "pg_catalog" not in path:
        order.append("pg_catalog")
    for sch in path:
        if sch == "pg_temp":
            if temp is not None:
                order.append(temp)
        elif sch == "$user":
            # The role running it (the owner, for SECURITY DEFINER): not in the snapshot.
            # Any schema outside the listed ones that has the name might be that one.
            if any(key[1] == name and key[0] not in path and key[0] not in order
                   for key in by_name):
                return None
        else:
            order.append(sch)
    for sch in order:
        if (sch, name) in by_name:
            return f"{sch}.{name}"
    listed = [sch for sch in path if sch not in ("$user", "pg_temp")]
    # Not found: the server would not find it there either; a name that resolves to nothing
    # here (never to the session's relation of that name) keeps every check failing closed.
    return f"{listed[0] if listed else 'pg_catalog'}.{name}"


def _body_names_resolved(eff: BodyEffects, fn: Any, catalog: Any) -> BodyEffects:
    """A function created with ``SET search_path = ...`` runs its body with that path: the
    relations its unqualified names mean are the ones that path finds, not the caller's
    session's. Those are added to what the body reads and writes (the names as written stay:
    only more is judged); a name the path cannot settle makes the body's effect unknown."""
    value = next((v for n, v in getattr(fn, "config", ()) if n == "search_path"), None)
    if value is None or catalog is None or not (eff.reads or eff.writes):
        return eff
    path = _proconfig_path(value)
    if path is None:
        return eff.merge(BodyEffects(opaque=("a search_path the analyzer cannot read",)))
    extra: dict[str, set[str]] = {"reads": set(), "writes": set()}
    for field in ("reads", "writes"):
        for name in getattr(eff, field):
            if "." in name:
                continue
            found = _resolve_in(name, path, catalog)
            if found is None:
                return eff.merge(BodyEffects(opaque=(
                    "names resolved through its own search_path ($user)",)))
            extra[field].add(found)
    return attrs.evolve(eff, reads=eff.reads | extra["reads"], writes=eff.writes | extra["writes"],
                        unbounded=eff.unbounded | frozenset(
                            n for n in extra["writes"] if n.rpartition(".")[2] in {
                                u.rpartition(".")[2] for u in eff.unbounded}))


def function_effects(names: Iterable[str], catalog: Any) -> BodyEffects:
    """The transitive effects of calling these (case-folded) function names.

    Every overload of a name counts (the analyzer does not resolve argument types), which only
    ever adds effects.
    """
    table = getattr(catalog, "functions", None) or {}
    out = _NONE
    seen: set[str] = set()
    todo = [n for n in names if n in table]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for fn in table.get(name, ()):
            eff = _body_names_resolved(body_effects(fn), fn, catalog)
            out = out.merge(eff)
            todo.extend(n for n in eff.functions if n in table and n not in seen)
    return out


def unknown_functions(s: StatementFacts, catalog: Any) -> frozenset[str]:
    """Functions neither built in nor in the snapshot (created since it was taken)."""
    builtins = getattr(catalog, "builtin_functions", None)
    if not builtins or not s.functions:
        return frozenset()
    return frozenset(f for f in s.functions
                     if f not in builtins and f not in catalog.user_functions)


# Statement kinds that run only what their text says (functions and relations aside).
_SEEN_KINDS = frozenset({"SELECT", "SHOW", "EXPLAIN", "EMPTY", "SET", "BEGIN", "COMMIT",
                         "ROLLBACK", "SAVEPOINT", "RELEASE", "ROLLBACK TO", "INSERT", "UPDATE",
                         "DELETE", "MERGE"})


def may_run_unseen_code(statements: Iterable[StatementFacts], catalog: Any) -> bool:
    """Whether running ``statements`` may execute code their text does not show — a
    function that is not built in (its body may be opaque), a view's definition, a trigger
    or rule of a written table, any other statement kind — which could change session
    settings behind the analyzer's back. Fail closed: no catalog, or a relation it does not
    know, counts as yes."""
    if catalog is None:
        return True
    builtins = catalog.builtin_functions
    todo = list(statements)
    views_seen: set[int] = set()
    while todo:
        s = todo.pop()
        if s.effect_unknown or s.opaque_reasons or not s.kinds <= _SEEN_KINDS:
            return True
        if s.functions and not s.functions <= builtins:
            return True
        for name in s.reads | s.writes:
            rel = catalog.resolve(name)
            if rel is None or (name in s.writes and rel.oid in catalog.side_effect_tables):
                return True
            if rel.kind in ("r", "p"):
                continue
            if rel.kind in ("v", "m") and name not in s.writes and rel.viewdef is not None:
                # A view runs its definition for the reader: it is seen when its text is
                # (a materialized view's is not run on read, but judging it the same is safe).
                if rel.oid in views_seen:
                    continue
                if len(views_seen) >= 256:
                    return True
                views_seen.add(rel.oid)
                from . import analyze  # (the package imports this module)

                body = analyze(rel.viewdef)
                if body.error is not None or not body.statements:
                    return True
                todo.extend(body.statements)
                continue
            return True
    return False


def with_function_effects(s: StatementFacts, catalog: Any) -> StatementFacts:
    """``s`` with the effects of the user functions it calls counted as its own.

    A name the catalog snapshot does not know (a function created since, or attribute
    notation such as ``ssn(u)``) adds nothing here: :func:`static_bound` measures such a
    statement, and it is never given a READ WRITE transaction on its account.
    """
    if catalog is None or not s.functions:
        return s
    if not getattr(catalog, "functions", None) or not s.functions & catalog.functions.keys():
        return s
    eff = function_effects(s.functions, catalog)
    if eff is _NONE:
        return s
    kinds = s.kinds | (eff.kinds - {"SELECT"})
    return attrs.evolve(
        s, kinds=kinds, row_kinds=s.row_kinds | eff.row_kinds,
        writes=s.writes | eff.writes, reads=s.reads | eff.reads,
        functions=s.functions | eff.functions, unbounded_writes=s.unbounded_writes | eff.unbounded,
        settings=s.settings + tuple(x for x in eff.settings if x not in s.settings),
        read_write_requested=s.read_write_requested or eff.read_write_requested,
        effect_unknown=s.effect_unknown + tuple(
            f"it calls a function containing {o}" for o in eff.opaque
            if f"it calls a function containing {o}" not in s.effect_unknown),
        calls_writing_function=s.calls_writing_function or eff.may_write)


# ---------------------------------------------------------------------------------------------
# bounds known before a statement runs


def _view_calls_user_code(s: StatementFacts, catalog: Any, depth: int = 0,
                          seen: set[int] | None = None) -> bool:
    """Whether a user view ``s`` reads (transitively) calls a user-defined or unknown function.

    Fails closed: a view body that cannot be analyzed, or nesting deeper than 16, counts."""
    if depth > 16:
        return True
    seen = set() if seen is None else seen
    for name in s.reads:
        rel = catalog.resolve(name)
        if rel is None or not rel.is_view or rel.oid in seen:
            continue
        seen.add(rel.oid)
        if rel.viewdef is None:
            continue  # a system view (no body in the snapshot): built-in code only
        from . import analyze

        try:
            a = analyze(rel.viewdef)
        except Exception:  # noqa: BLE001 - unknown is not safe
            return True
        if a.error is not None:
            return True
        for body in a.statements:
            if body.functions & catalog.user_functions or unknown_functions(body, catalog):
                return True
            if _view_calls_user_code(body, catalog, depth + 1, seen):
                return True
    return False


def static_bound(s: StatementFacts, catalog: Any) -> int | None:
    """The most rows ``s`` can insert, update or delete, when known before it runs; else None.

    0 for statements that change no rows at all (reads, transaction control, SET).
    """
    if s.effect_unknown or s.calls_writing_function or s.executes or s.opaque_reasons:
        return None
    if catalog is not None and _view_calls_user_code(s, catalog):
        # SELECT * FROM v where v's body calls a user function: the view runs it for the
        # reader, so the read may write (judge by effect: measured).
        return None
    if catalog is not None and (s.functions & catalog.user_functions
                                or unknown_functions(s, catalog)):
        # Its body was read from the snapshot, which may predate a CREATE OR REPLACE (or
        # the function is newer than the snapshot): what it does is measured, not assumed.
        return None
    tree = s.tree or {}
    if len(tree) != 1:
        return 0 if not s.writes_data else None
    (typ, body), = tree.items()
    if typ not in _DML:
        if s.kinds & {"INSERT", "UPDATE", "DELETE", "MERGE"}:
            return None  # DML somewhere inside (EXPLAIN ANALYZE, a CTE of a SELECT, ...)
        if s.kinds & {"COPY"}:
            # COPY TO changes no rows (DML or a writing function in its query is caught
            # above); COPY FROM inserts as many as it is sent.
            return 0 if s.copy is not None and not s.copy.is_from else None
        return 0
    if typ == "MergeStmt" or body.get("withClause") or catalog is None:
        return None
    if len(s.writes) != 1 or s.kinds & {"MERGE"}:
        return None
    if catalog.user_functions and s.functions & catalog.user_functions:
        return None
    rel = catalog.resolve(next(iter(s.writes)))
    if rel is None or rel.is_view or rel.oid in catalog.side_effect_tables:
        return None
    if typ == "InsertStmt":
        sel = body.get("selectStmt")
        if sel is None:
            return 1  # DEFAULT VALUES
        inner = sel.get("SelectStmt") if isinstance(sel, dict) else None
        if not inner or not inner.get("valuesLists"):
            return None  # INSERT ... SELECT: as many rows as the query returns
        if any(inner.get(k) for k in ("fromClause", "whereClause", "withClause", "targetList")) \
                or inner.get("op", "SETOP_NONE") != "SETOP_NONE":
            return None
        return len(inner["valuesLists"])
    where = body.get("whereClause")
    pinned = _pinned_columns(where, rel, body.get("relation") or {})
    for key in catalog.unique_keys.get(rel.oid, ()):
        if key and key <= pinned:
            return 1
    return None


def _pinned_columns(where: Any, rel: Any, target: dict[str, Any]) -> frozenset[str]:
    """Target columns the WHERE clause fixes to one constant or parameter (``col = $1``),
    looking through AND only (an OR, a NOT or anything else pins nothing)."""
    if not isinstance(where, dict) or len(where) != 1:
        return frozenset()
    (typ, body), = where.items()
    if typ == "BoolExpr" and body.get("boolop") == "AND_EXPR":
        out: frozenset[str] = frozenset()
        for arg in body.get("args", ()):
            out |= _pinned_columns(arg, rel, target)
        return out
    if typ != "A_Expr" or body.get("kind") != "AEXPR_OP":
        return frozenset()
    names = body.get("name") or ()
    op = names[-1].get("String", {}).get("sval") if names and isinstance(names[-1], dict) else None
    if op != "=" or len(names) != 1:
        return frozenset()
    for col_side, val_side in ((body.get("lexpr"), body.get("rexpr")),
                               (body.get("rexpr"), body.get("lexpr"))):
        col = _target_column(col_side, rel, target)
        if col is not None and _is_constant(val_side):
            return frozenset({col})
    return frozenset()


def _target_column(node: Any, rel: Any, target: dict[str, Any]) -> str | None:
    if not isinstance(node, dict) or "ColumnRef" not in node:
        return None
    fields = node["ColumnRef"].get("fields") or ()
    names = [f.get("String", {}).get("sval") if isinstance(f, dict) else None for f in fields]
    if not names or any(n is None for n in names):
        return None
    alias = (target.get("alias") or {}).get("aliasname")
    qualifiers = {alias} if alias else {rel.name, rel.qualname}
    if len(names) == 2 and names[0] not in qualifiers:
        return None
    if len(names) == 3 and f"{names[0]}.{names[1]}" != rel.qualname:
        return None
    if len(names) > 3:
        return None
    col = str(names[-1])
    return col if col in rel.columns else None


def _is_constant(node: Any) -> bool:
    """A literal or a bind parameter (possibly cast): one value for the whole statement."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    (typ, body), = node.items()
    if typ == "A_Const":
        return not body.get("isnull")
    if typ == "ParamRef":
        return True
    if typ == "TypeCast":
        return _is_constant(body.get("arg"))
    return False
