"""``import governed_db.pq`` / ``from governed_db.types.json import Jsonb`` resolve to psycopg's.

Programs written against psycopg import its submodules by dotted name. Rewriting ``psycopg`` to
``governed_db`` must keep working, and must give the *same* module objects (a second copy of
``psycopg.types.json`` would register a second set of adapters). A meta-path finder maps
``governed_db.<sub>[.<more>]`` to ``psycopg.<sub>[.<more>]`` for psycopg's public submodules;
``governed_db.errors`` is governed_db's own module and is not aliased.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

ALIASED = frozenset({"adapt", "adapters", "crdb", "dbapi20", "postgres", "pq", "rows", "sql",
                     "transaction", "types", "generators", "waiting", "conninfo", "client_cursor",
                     "copy", "cursor", "cursor_async", "server_cursor", "connection",
                     "connection_async", "pipeline", "abc", "version"})


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.original = module.__spec__, getattr(module, "__loader__", None)
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module is psycopg's, already executed. The import system has just stamped our
        # alias spec on it; give it back its own so psycopg's identity is untouched.
        module.__spec__, module.__loader__ = self.original


class _AliasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, prefix: str, target: str) -> None:
        self.prefix = prefix + "."
        self.target = target + "."

    def find_spec(self, fullname: str, path: Any = None,
                  target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.prefix):
            return None
        rest = fullname[len(self.prefix):]
        if rest.split(".", 1)[0] not in ALIASED:
            return None
        real = self.target + rest
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real))


def install(name: str, psycopg: ModuleType) -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(name, psycopg.__name__))
