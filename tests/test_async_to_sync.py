"""The sync connection and cursor modules are generated from the async ones and are current.

``tools/async_to_sync.py`` derives ``governed_db/_connection.py`` and ``governed_db/_cursor.py``
from their ``_async`` sources; a hand edit of a generated file, or an async change whose sync
twin was not regenerated, fails here (run ``python tools/async_to_sync.py`` and commit).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("async_to_sync", ROOT / "tools" / "async_to_sync.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["async_to_sync"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("async_to_sync", None)


def test_generated_sync_files_are_current(tool, capsys):
    rc = tool.main(["--check"])
    out = capsys.readouterr()
    assert rc == 0, f"generated sync files are stale:\n{out.out}{out.err}"


def test_each_generated_file_says_so(tool):
    for source, target in tool.PAIRS.items():
        text = (ROOT / target).read_text(encoding="utf-8")
        assert text.startswith(tool.header(source)), target


def test_check_notices_a_hand_edit(tool, tmp_path, monkeypatch, capsys):
    # The check against a copy of the tree in which a generated file was edited by hand.
    for source, target in tool.PAIRS.items():
        for rel in (source, target):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text((ROOT / rel).read_text(encoding="utf-8"), encoding="utf-8")
    target = tmp_path / "governed_db" / "_cursor.py"
    target.write_text(target.read_text(encoding="utf-8").replace(
        "self._gov_init()", "pass", 1), encoding="utf-8")
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    assert tool.main(["--check"]) == 1
    assert "self._gov_init()" in capsys.readouterr().out
    assert tool.main([]) == 0  # regenerated
    assert tool.main(["--check"]) == 0


def test_conversion_rules(tool):
    src = '''"""An async cursor for AsyncConnection."""
import asyncio  # async only


class AsyncThing(AsyncCursor):
    async def run(self, gen, *,
                  timeout=None):
        async with self.lock:
            return await self.wait(gen)

    # async only: begin (nothing to wait for in sync code)
    async def extra(self):
        await asyncio.sleep(0)
    # async only: end

    async def rows(self):
        async for row in self:
            yield row
'''
    out = tool.convert(src, "x_async.py")
    assert out == tool.header("x_async.py") + '''"""A cursor for Connection."""


class AsyncThing(Cursor):
    def run(self, gen, *,
            timeout=None):
        with self.lock:
            return self.wait(gen)

    def rows(self):
        for row in self:
            yield row
'''
