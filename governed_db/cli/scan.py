"""``governed-db scan``: propose a masking policy from column names and sampled values."""

from __future__ import annotations

from collections import Counter

import click
import psycopg
from psycopg import sql

from ..masking import classify_name, detect


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
        findings: list[tuple[str, str, str, int, int]] = []
        with Progress(transient=True) as progress:
            task = progress.add_task("sampling columns", total=len(cols))
            for schema, table, column in cols:
                progress.advance(task)
                by_name = classify_name(column)
                hits: Counter[str] = Counter()
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
                    for _, _, cat in detect(value):
                        hits[cat] += 1
                cat, n = hits.most_common(1)[0] if hits else (None, 0)
                if by_name or (total and n / total >= 0.3):
                    findings.append((f"{table}.{column}", by_name or "", cat or "", n, total))
    click.echo("# proposed by `governed-db scan`: review before use")
    click.echo("[masking]\ndetect_names = true\ndetect_values = true\n")
    for name, by_name, cat, n, total in findings:
        why = []
        if by_name:
            why.append(f"name looks like {by_name}")
        if cat:
            why.append(f"{n}/{total} sampled values look like {cat}")
        strategy = "email" if "email" in (by_name, cat) else "partial" if (by_name or cat) in (
            "ssn", "phone", "card", "iban") else "redact"
        click.echo(f"# {name}: {'; '.join(why)}")
        click.echo(f"[[masking.columns]]\ncolumns = [\"{name}\"]\nstrategy = \"{strategy}\"\n")
    return 0
