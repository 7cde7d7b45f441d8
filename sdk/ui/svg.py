"""Inline SVG charts (no JavaScript chart library): line curves, bars with confidence intervals and the step graph.
Every number is formatted here and every label escaped, so the markup is safe to embed."""

from __future__ import annotations

from html import escape
from typing import Any

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _f(x: float) -> str:
    return f"{x:.1f}"


def curves(series: dict[str, list[list[float]]], width: int = 520, height: int = 200, title: str = "") -> str:
    """One polyline per named series of ``[[x, y], ...]``, with axes bounds and a legend."""
    points = [(float(x), float(y)) for s in series.values() for x, y in s]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 48, 10, 20, 24
    w, h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return top + h - (y - y0) / (y1 - y0) * h

    out = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title or ", ".join(series))}</title>',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>',
           f'<text x="4" y="{top + 8}" font-size="10">{y1:.4g}</text>',
           f'<text x="4" y="{top + h}" font-size="10">{y0:.4g}</text>',
           f'<text x="{left}" y="{height - 6}" font-size="10">{x0:g}</text>',
           f'<text x="{left + w - 30}" y="{height - 6}" font-size="10">{x1:g}</text>']
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        pts = " ".join(f"{_f(sx(float(x)))},{_f(sy(float(y)))}" for x, y in s)
        out.append(f'<polyline class="curve" data-name="{escape(name)}" fill="none" stroke="{color}" '
                   f'stroke-width="1.5" points="{pts}"/>')
        out.append(f'<text x="{left + 8 + 120 * i}" y="14" font-size="11" fill="{color}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def bars(rows: list[dict[str, Any]], width: int = 520, title: str = "") -> str:
    """Horizontal bars in [0, 1] (or scaled to the largest value) with CI whiskers: rows of
    ``{"label", "value", "low", "high"}``."""
    if not rows:
        return ""
    top_value = max([1.0] + [float(r.get("high") or r["value"] or 0) for r in rows])
    left, bar_h, gap = 190, 16, 6
    height = len(rows) * (bar_h + gap) + 10
    w = width - left - 60

    def sx(v: Any) -> float:
        return left + max(0.0, float(v or 0)) / top_value * w

    out = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for i, r in enumerate(rows):
        y = 5 + i * (bar_h + gap)
        color = COLORS[i % len(COLORS)]
        out.append(f'<text x="4" y="{y + 12}" font-size="11">{escape(str(r["label"]))}</text>')
        out.append(f'<rect class="bar" x="{left}" y="{y}" width="{_f(sx(r["value"]) - left)}" height="{bar_h}" '
                   f'fill="{color}" opacity="0.7"/>')
        if r.get("low") is not None and r.get("high") is not None:
            ym = y + bar_h / 2
            out.append(f'<line x1="{_f(sx(r["low"]))}" x2="{_f(sx(r["high"]))}" y1="{ym}" y2="{ym}" stroke="#000"/>')
        out.append(f'<text x="{_f(sx(r["value"]) + 4)}" y="{y + 12}" font-size="11">{float(r["value"] or 0):.3f}</text>')
    out.append("</svg>")
    return "".join(out)


def graph(nodes: list[dict[str, Any]], width: int = 900) -> str:
    """The step graph, left to right by depth: nodes ``{"id", "depends_on", "state", "color"}`` in topological
    order; each box links to its step's page."""
    depth: dict[str, int] = {}
    for n in nodes:
        depth[n["id"]] = 1 + max((depth.get(d, 0) for d in n["depends_on"]), default=-1)
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(depth[n["id"]], []).append(n["id"])
    box_w, box_h, gap_x, gap_y = 150, 34, 40, 14
    pos = {sid: (10 + d * (box_w + gap_x), 10 + i * (box_h + gap_y)) for d, ids in columns.items()
           for i, sid in enumerate(ids)}
    width = max(width, 20 + (max(columns, default=0) + 1) * (box_w + gap_x))
    height = 20 + max((len(v) for v in columns.values()), default=1) * (box_h + gap_y)
    out = [f'<svg class="graph" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'xmlns="http://www.w3.org/2000/svg"><title>step graph</title>']
    for n in nodes:
        x, y = pos[n["id"]]
        for d in n["depends_on"]:
            if d in pos:
                px, py = pos[d]
                out.append(f'<line x1="{px + box_w}" y1="{py + box_h / 2}" x2="{x}" y2="{y + box_h / 2}" '
                           'stroke="#999" marker-end="url(#arrow)"/>')
    out.insert(1, '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
                  'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#999"/></marker></defs>')
    for n in nodes:
        x, y = pos[n["id"]]
        sid = escape(n["id"])
        out.append(f'<a href="/plan/{sid}"><g class="node" data-step="{sid}"><rect x="{x}" y="{y}" width="{box_w}" '
                   f'height="{box_h}" rx="4" fill="{n["color"]}" stroke="#555"/>'
                   f'<text x="{x + 6}" y="{y + 14}" font-size="11" font-weight="bold">{sid}</text>'
                   f'<text x="{x + 6}" y="{y + 28}" font-size="10">{escape(n["state"])}</text></g></a>')
    out.append("</svg>")
    return "".join(out)
