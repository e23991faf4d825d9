"""``governed-db scan``: propose a masking policy from column names and sampled values."""

from __future__ import annotations

from collections import Counter

import click
import psycopg
from psycopg import sql

from ..masking import classify_column, detect


# A column is free text when its detected values sit among other words (a note, a comment,
# a message) rather than being the whole value (an e-mail column).
_FREE_TEXT_MIN_HITS = 2
_DEDICATED_SHARE = 0.3


def _strategy(category: str) -> str:
    return "email" if category == "email" else "partial" if category in (
        "ssn", "phone", "card", "iban") else "redact"


def run_scan(dsn: str, sample: int) -> int:
    from rich.progress import Progress

    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        click.echo(f"cannot connect: {exc}", err=True)
        return 2
    with conn:
        cols = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " ORDER BY 1, 2, ordinal_position").fetchall()
        findings: list[tuple[str, str, Counter[str], int, int, int]] = []
        with Progress(transient=True) as progress:
            task = progress.add_task("sampling columns", total=len(cols))
            for schema, table, column in cols:
                progress.advance(task)
                by_name = classify_column(table, column)
                hits: Counter[str] = Counter()  # values in which each detector fired
                embedded = 0  # values with PII among other text
                with_pii = 0
                total = 0
                try:
                    rows = conn.execute(sql.SQL("SELECT {}::text FROM {}.{} LIMIT %s").format(
                        sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table)),
                        [sample]).fetchall()
                except psycopg.Error:
                    rows = []
                for (value,) in rows:
                    if value is None:
                        continue
                    total += 1
                    spans = detect(value)
                    if not spans:
                        continue
                    with_pii += 1
                    hits.update({cat for _, _, cat in spans})
                    covered = sum(end - start for start, end, _ in spans)
                    if covered < len(value.strip()):
                        embedded += 1
                if by_name or hits:
                    findings.append((f"{table}.{column}", by_name or "", hits, with_pii,
                                     embedded, total))
    click.echo("# proposed by `governed-db scan`: review before use")
    click.echo("[masking]\ndetect_names = true\ndetect_values = true\n")
    for name, by_name, hits, with_pii, embedded, total in findings:
        kinds = ", ".join(f"{cat} {n}" for cat, n in
                          sorted(hits.items(), key=lambda x: (-x[1], x[0])))
        cat, n = hits.most_common(1)[0] if hits else ("", 0)
        if by_name:
            why = [f"name looks like {by_name}"]
            if hits:
                why.append(f"{n}/{total} sampled values look like {cat}")
            strategy = _strategy(by_name)
        elif embedded and (len(hits) > 1 or with_pii >= _FREE_TEXT_MIN_HITS):
            # Free text with PII inside (several kinds, or more than a stray match): the
            # whole value is the unit a person can review, so the proposal hides it whole.
            # Agents already get these values masked in place ([masking] detect_in_text).
            why = [f"free text: {with_pii}/{total} sampled values contain PII ({kinds})"]
            strategy = "redact"
        elif total and n / total >= _DEDICATED_SHARE:
            why = [f"{n}/{total} sampled values look like {cat}"]
            strategy = _strategy(cat)
        else:
            click.echo(f"# {name}: {with_pii}/{total} sampled values contain PII ({kinds});"
                       " not proposed (too few to tell); agents get it masked in place"
                       " (detect_in_text)\n")
            continue
        click.echo(f"# {name}: {'; '.join(why)}")
        click.echo(f"[[masking.columns]]\ncolumns = [\"{name}\"]\nstrategy = \"{strategy}\"\n")
    return 0
