"""Handlers of the statements that are not queries: DDL, transactions, settings, session
objects (PREPARE/EXECUTE, cursors), DO and CALL.

Each takes ``(body, collector, now, ctes)`` like the walk's own handlers; ``_extract`` puts them
in the walk's table.
"""

from __future__ import annotations

from typing import Any

from ._nodes import Node, _defelem_str, _literal, _namelist, relname
from ._plpgsql import PLPGSQL_UNDERSTOOD, embedded_sql, parse_plpgsql, plpgsql_nodes
from ._vocabulary import _RELATION_OBJECTS, _TX_KINDS
from ._walk import _Collector, _walk, _walk_fields
from ._where import _def_bool


def _stored(kind: str, rel_key: str | None, body_keys: tuple[str, ...] = ()) -> Any:
    """DDL that stores a body: the body adds functions but no kinds, reads or writes."""

    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        if now:
            c.kinds.add(kind)
            if rel_key and isinstance(body.get(rel_key), dict):
                c.writes.add(relname(body[rel_key]))
        for key, value in body.items():
            if key == rel_key:
                continue
            if isinstance(value, (dict, list)):
                _walk(value, c, False if key in body_keys or not body_keys else now, ctes)

    return handler


def _h_relations(kind: str, key: str) -> Any:
    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        if now:
            c.kinds.add(kind)
            for item in body.get(key, ()) or ():
                rv = item.get("RangeVar", item) if isinstance(item, dict) else {}
                if "VacuumRelation" in rv:
                    rv = rv["VacuumRelation"].get("relation", {})
                if "relname" in rv:
                    c.writes.add(relname(rv))
        for k, value in body.items():
            if k != key and isinstance(value, (dict, list)):
                _walk(value, c, now, ctes)

    return handler


def _h_vacuum(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _h_relations("VACUUM" if body.get("is_vacuumcmd") else "ANALYZE", "rels")(body, c, now, ctes)
    # VACUUM FULL rewrites each table under an ACCESS EXCLUSIVE lock, like CLUSTER.
    for opt in body.get("options") or ():
        d = opt.get("DefElem") or {}
        if d.get("defname") == "full" and (d.get("arg") is None or _def_bool(d["arg"])):
            c.vacuum_full = True


def _h_drop(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("DROP")
        if body.get("removeType") in _RELATION_OBJECTS:
            for obj in body.get("objects", ()):
                items = obj.get("List", {}).get("items", ())
                c.writes.add(_namelist(items))


def _h_grant(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("GRANT" if body.get("is_grant") else "REVOKE")
        if body.get("objtype") in _RELATION_OBJECTS and body.get("targtype") == "ACL_TARGET_OBJECT":
            for obj in body.get("objects", ()):
                rv = obj.get("RangeVar", obj)
                if "relname" in rv:
                    c.writes.add(relname(rv))


def _h_comment(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("COMMENT")
        if body.get("objtype") in _RELATION_OBJECTS:
            items = body.get("object", {}).get("List", {}).get("items", ())
            name = _namelist(items)
            if body.get("objtype") == "OBJECT_COLUMN":
                name = name.rsplit(".", 1)[0]
            if name:
                c.writes.add(name)


def _h_rename(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("ALTER")
        rel = body.get("relation")
        if isinstance(rel, dict) and "relname" in rel:
            c.writes.add(relname(rel))


def _h_alter_table(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("ALTER")
        rel = body.get("relation")
        if isinstance(rel, dict):
            c.writes.add(relname(rel))
    # Column defaults added now are evaluated for existing rows now: walk them "now".
    _walk(body.get("cmds"), c, now, ctes)


def _h_tx(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    kind = _TX_KINDS.get(body.get("kind", ""), "TRANSACTION")
    if now:
        c.kinds.add(kind)
    _tx_options(body.get("options", ()), c, "transaction_read_only")


def _tx_options(options: Any, c: _Collector, setting: str) -> None:
    for opt in options or ():
        d = opt.get("DefElem", {})
        name = d.get("defname", "")
        value = _literal(d.get("arg"))
        if name == "transaction_read_only":
            c.settings.append((setting, str(value)))
            if not value:
                c.rw = True
        elif name:
            c.settings.append((name, None if value is None else str(value)))


def _h_set(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    kind = body.get("kind", "")
    name = str(body.get("name", "")).lower()
    c.kinds.add("RESET" if kind.startswith("VAR_RESET") else "SET")
    if kind == "VAR_RESET_ALL":
        c.settings.append(("*", None))
    elif kind == "VAR_SET_MULTI":
        target = ("default_transaction_read_only" if name == "session characteristics"
                  else "transaction_read_only")
        _tx_options(body.get("args", ()), c, target)
    else:
        args = body.get("args") or ()
        value = ",".join(str(_literal(a)) for a in args) if args else None
        c.settings.append((name, value))
    _walk(body.get("args"), c, now, ctes)


def _h_discard(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    c.kinds.add("DISCARD")
    if body.get("target") == "DISCARD_ALL":
        c.settings.append(("*", None))


def _h_prepare(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("PREPARE")
    name = str(body.get("name", ""))
    c.prepares.append(name)
    inner = _Collector({})
    query = body.get("query")
    if isinstance(query, dict) and "SelectStmt" in query:
        inner.kinds.add("SELECT")
    _walk(query, inner, True, ctes)
    c.prepared_here[name] = inner
    c.merge_calls(inner)


def _h_execute(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("EXECUTE")
    name = str(body.get("name", ""))
    c.executes.append(name)
    inner = c.prepared_here.get(name)
    if inner is None:
        # Resolved against the session by this name (effective_facts); the message is text
        # for people only.
        c.session_refs.append((len(c.opaque), "prepared", name))
        c.opaque.append(f"EXECUTE of {name!r}, which was not prepared in this string")
    elif now:
        c.kinds |= inner.kinds
        c.rows |= inner.rows
        c.writes |= inner.writes
        c.reads |= inner.reads
        c.unbounded |= inner.unbounded
    _walk(body.get("params"), c, now, ctes)


def _h_declare(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("DECLARE")
    name = str(body.get("portalname", ""))
    c.declares.append(name)
    # The query runs as rows are fetched: its reads and functions count from now on.
    inner = _Collector({})
    _walk(body.get("query"), inner, True, ctes)
    inner.kinds.add("SELECT")
    c.prepared_here["\0cursor:" + name] = inner
    c.reads |= inner.reads
    c.merge_calls(inner)


def _h_fetch(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("MOVE" if body.get("ismove") else "FETCH")
    name = str(body.get("portalname", ""))
    c.fetches.append(name)
    inner = c.prepared_here.get("\0cursor:" + name)
    if inner is None:
        c.session_refs.append((len(c.opaque), "cursor", name))
        c.opaque.append(f"FETCH from cursor {name!r}, which was not declared in this string")
    elif now:
        c.kinds |= inner.kinds
        c.reads |= inner.reads


def _h_close(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    c.kinds.add("CLOSE")
    name = body.get("portalname")
    if name is None:  # CLOSE ALL
        c.closes.append("*")
        for key in [k for k in c.prepared_here if k.startswith("\0cursor:")]:
            del c.prepared_here[key]
    else:
        c.closes.append(str(name))
        c.prepared_here.pop("\0cursor:" + str(name), None)


def _h_deallocate(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    c.kinds.add("DEALLOCATE")
    name = body.get("name")
    if body.get("isall") or name is None:
        c.deallocates.append("*")
        for key in [k for k in c.prepared_here if not k.startswith("\0cursor:")]:
            del c.prepared_here[key]
    else:
        c.deallocates.append(str(name))
        c.prepared_here.pop(str(name), None)


def _h_opaque(kind: str, why: str) -> Any:
    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        if now:
            c.kinds.add(kind)
            c.opaque.append(why)
        _walk_fields(body, c, now, ctes)

    return handler


_DO_OPAQUE = "DO runs procedural code the analyzer cannot see"


def _h_do(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    """``DO``: a PL/pgSQL body made only of understood constructs (``_plpgsql.PLPGSQL_UNDERSTOOD``) is
    judged by what it does — its embedded SQL counts as the DO's own reads, writes, calls
    and statement kinds. Any other body (another language, a construct not on the list, a
    parse failure) stays opaque: fail closed."""
    if now:
        c.kinds.add("DO")
    opts = {str(d["DefElem"].get("defname")): d["DefElem"].get("arg")
            for d in body.get("args") or () if isinstance(d, dict) and "DefElem" in d}
    src = _defelem_str(opts.get("as"))
    lang = _defelem_str(opts.get("language")) if "language" in opts else "plpgsql"
    queries = None if src is None or (lang or "").lower() != "plpgsql" else _do_sql(src)
    if queries is None:
        if now:
            c.opaque.append(_DO_OPAQUE)
        return
    import pgparse

    for text in queries:
        try:
            parsed = pgparse.parse(text)
        except Exception:  # noqa: BLE001 - not SQL to us: we cannot know what it does
            c.opaque.append(_DO_OPAQUE)
            return
        for raw in parsed:
            _walk(raw.get("stmt", {}), c, now, ctes)


def do_block_texts(body: Node) -> tuple[list[str], list[str]] | None:
    """The SQL texts a ``DO`` statement (its ``DoStmt`` body) would run: its static SQL, and
    the texts its dynamic ``EXECUTE`` statements build from its constants alone (``_fold``);
    or None when it runs anything else (another language, an ``EXECUTE`` of a value computed
    at run time, a construct off the list).

    For judging what the DO's *error text* may echo only (``ErrorTextStage``): the folded
    texts are this library's reading of ``format()``/``chr()``/``||``, not the server's, so the
    statement itself stays opaque to governance."""
    from ._fold import fold_execute

    opts = {str(d["DefElem"].get("defname")): d["DefElem"].get("arg")
            for d in body.get("args") or () if isinstance(d, dict) and "DefElem" in d}
    src = _defelem_str(opts.get("as"))
    lang = _defelem_str(opts.get("language")) if "language" in opts else "plpgsql"
    if src is None or (lang or "").lower() != "plpgsql":
        return None
    tree = parse_plpgsql(src)
    if tree is None:
        return None
    static: list[str] = []
    dynamic: list[str] = []
    for key, value in plpgsql_nodes(tree):
        if key == "PLpgSQL_stmt_dynexecute":
            built = fold_execute(value)
            if built is None:
                return None
            dynamic.append(built)
        elif key == "PLpgSQL_expr" and isinstance(value, dict):
            static.append(embedded_sql(value))
        elif key not in PLPGSQL_UNDERSTOOD:
            return None
    return static, dynamic


def _do_sql(src: str) -> list[str] | None:
    """The SQL texts of a DO body (statements, and expressions as SELECTs), or None when the
    body uses anything not on the allow-list or does not parse."""
    tree = parse_plpgsql(src)
    if tree is None:
        return None
    out: list[str] = []
    for key, value in plpgsql_nodes(tree):
        if key not in PLPGSQL_UNDERSTOOD:
            return None
        if key == "PLpgSQL_expr":
            if not isinstance(value, dict):
                return None
            out.append(embedded_sql(value))
    return out


def _h_simple(kind: str) -> Any:
    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        if now:
            c.kinds.add(kind)
        _walk_fields(body, c, now, ctes)

    return handler
