"""Generate governed_db/pg_messages.txt: PostgreSQL's server message templates (msgids).

The templates are PostgreSQL's own (``postgres-NN.mo`` and ``plpgsql-NN.mo`` message catalogs,
PostgreSQL licence); every translation's catalog lists the English msgid, so the union over
the installed languages is the server's message catalogue. Run on a host with the PostgreSQL
server's locale files installed:

    python tools/gen_pg_messages.py /usr/share/locale > governed_db/pg_messages.txt
"""

from __future__ import annotations

import gettext
import sys
from pathlib import Path


def main(root: str) -> None:
    ids: set[str] = set()
    for mo in sorted(Path(root).glob("*/LC_MESSAGES/*.mo")):
        if not mo.name.startswith(("postgres-", "plpgsql-")):
            continue
        with mo.open("rb") as fh:
            catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
        for key in catalog:
            msgid = key[0] if isinstance(key, tuple) else key
            if msgid and "\n" not in msgid:
                ids.add(msgid)
    for msgid in sorted(ids):
        print(msgid)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/locale")
