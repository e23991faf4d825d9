"""``import governed_db.pq`` / ``from governed_db.types.json import Jsonb`` resolve to psycopg's.

Programs written against psycopg import its submodules by dotted name. Rewriting ``psycopg`` to
``governed_db`` must keep working, and must give the *same* module objects (a second copy of
``psycopg.types.json`` would register a second set of adapters). A meta-path finder maps
``governed_db.<sub>[.<more>]`` to ``psycopg.<sub>[.<more>]`` for psycopg's public submodules;
``governed_db.errors`` is governed_db's own module and is not aliased.

The same submodules are attributes too, as on psycopg (``psycopg.conninfo.make_conninfo``
after a plain ``import psycopg``): those psycopg has already imported are set on the package,
the others (``crdb``) are imported on first attribute access (the package's ``__getattr__``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

# psycopg's public submodules (no leading underscore); pinned against psycopg's package
# directory by tests/test_dropin.py.
ALIASED = frozenset({"abc", "adapt", "adapters", "client_cursor", "connection",
                     "connection_async", "conninfo", "copy", "crdb", "cursor", "cursor_async",
                     "dbapi20", "generators", "postgres", "pq", "raw_cursor", "rows",
                     "server_cursor", "sql", "transaction", "types", "version", "waiting"})


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
    package = sys.modules[name]
    for sub in ALIASED:
        module = sys.modules.get(f"{psycopg.__name__}.{sub}")
        if module is not None and not hasattr(package, sub):
            setattr(package, sub, module)


def submodule(package: str, name: str) -> ModuleType:
    """``governed_db.<name>`` for a public psycopg submodule not imported yet (``crdb``)."""
    if name not in ALIASED:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return importlib.import_module(f"{package}.{name}")
