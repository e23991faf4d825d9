"""Server-rendered SVG charts for the console (no JavaScript, no front-end build).

Every label drawn here is an identity, a table, a column, a decision or a time bucket —
names the audit trail already carries in clear — never a value. Text goes through
:func:`html.escape` because identities and table names are caller-controlled strings.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

__all__ = ["grouped_bars", "stacked_bars"]

# Colour per decision; the rest cycle through a palette readable on white.
DECISION_COLOURS = {"ok": "#2e7d32", "denied": "#c62828", "approval_required": "#ef6c00",
                    "rolled_back": "#6a1b9a", "error": "#616161", "would_deny": "#f9a825"}
PALETTE = ("#1565c0", "#00838f", "#8e24aa", "#d84315", "#558b2f", "#5d4037", "#283593",
           "#ad1457")


def _colour(key: str, i: int) -> str:
    return DECISION_COLOURS.get(key, PALETTE[i % len(PALETTE)])


def _legend(keys: Sequence[str], x: int, y: int) -> list[str]:
    out = []
    for i, key in enumerate(keys):
        cx = x + (i % 4) * 150
        cy = y + (i // 4) * 18
        out.append(f'<rect x="{cx}" y="{cy}" width="12" height="12" fill="{_colour(key, i)}"/>'
                   f'<text x="{cx + 16}" y="{cy + 10}" font-size="11">{html.escape(key)}</text>')
    return out


def stacked_bars(title: str, buckets: Sequence[str],
                 series: Mapping[str, Sequence[int]], *, width: int = 640,
                 height: int = 220) -> str:
    """Vertical bars per bucket (e.g. hour), stacked by series (e.g. decision)."""
    keys = list(series)
    totals = [sum(series[k][i] for k in keys) for i in range(len(buckets))]
    top = max(totals or [0]) or 1
    left, bottom, plot_h = 40, 40, height - 90
    slot = (width - left - 10) / max(1, len(buckets))
    bar_w = min(60.0, max(2.0, slot * 0.7))
    parts = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}"'
             f' xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             f' viewBox="0 0 {width} {height}">',
             f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}'
             '</text>',
             f'<line x1="{left}" y1="{24 + plot_h}" x2="{width - 10}" y2="{24 + plot_h}"'
             ' stroke="#999"/>',
             f'<text x="4" y="32" font-size="10">{top}</text>']
    for i, bucket in enumerate(buckets):
        x = left + i * slot + (slot - bar_w) / 2
        y: float = 24 + plot_h
        for j, key in enumerate(keys):
            n = series[key][i]
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}"'
                         f' height="{h:.1f}" fill="{_colour(key, j)}">'
                         f'<title>{html.escape(bucket)} {html.escape(key)}: {n}</title></rect>')
        if len(buckets) <= 12 or i % max(1, len(buckets) // 8) == 0:
            parts.append(f'<text x="{x:.1f}" y="{24 + plot_h + 14}" font-size="10">'
                         f'{html.escape(bucket)}</text>')
    parts.extend(_legend(keys, left, height - bottom + 12))
    parts.append("</svg>")
    return "".join(parts)


def grouped_bars(title: str, rows: Mapping[str, Mapping[str, int]], *, width: int = 640,
                 bar_h: int = 14) -> str:
    """Horizontal bars per row (e.g. identity), one bar per key (e.g. masked / unmasked)."""
    keys = sorted({k for v in rows.values() for k in v})
    top = max((n for v in rows.values() for n in v.values()), default=0) or 1
    label_w, y = 170, 30
    height = 40 + len(rows) * (len(keys) * bar_h + 10) + 24 * (1 + len(keys) // 4)
    parts = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}"'
             f' xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             f' viewBox="0 0 {width} {height}">',
             f'<text x="4" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for name, values in rows.items():
        parts.append(f'<text x="4" y="{y + bar_h}" font-size="11">'
                     f'{html.escape(name[:28])}</text>')
        for j, key in enumerate(keys):
            n = values.get(key, 0)
            if not n:
                continue
            w = (width - label_w - 50) * n / top
            parts.append(f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}"'
                         f' height="{bar_h - 2}" fill="{_colour(key, j)}">'
                         f'<title>{html.escape(name)} {html.escape(key)}: {n}</title></rect>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}" font-size="10">'
                         f'{n}</text>')
            y += bar_h
        y += 10
    parts.extend(_legend(keys, 4, y + 6))
    parts.append("</svg>")
    return "".join(parts)
