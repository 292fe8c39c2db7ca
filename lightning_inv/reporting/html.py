"""Self-contained HTML pieces for the report pages: escaped text, numbers with intervals, sortable
tables, images inlined as data URIs and line charts as inline SVG (no network, no files beside
the page). One ``page`` holds the style and the few lines of script that sort tables."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}th.sortable{cursor:pointer}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ci{color:#777;font-size:12px}.notable{background:#fff3c4}.outside{background:#fde0dc}
figure{display:inline-block;margin:8px;vertical-align:top}figcaption{font-size:12px;color:#555}
img.figure{max-width:100%}.pair img{width:112px;height:112px;image-rendering:pixelated}
.muted{color:#777}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th.sortable').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var down = th.getAttribute('aria-sort') !== 'descending';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var key = function (row) {
        var cell = row.cells[column], v = cell.getAttribute('data-sort');
        var n = parseFloat(v === null ? cell.textContent : v);
        return isNaN(n) ? (v === null ? cell.textContent : v) : n;
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var order = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
        return down ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def esc(value: object) -> str:
    return html.escape(str(value))


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


@dataclass(frozen=True)
class Cell:
    """A table cell: its HTML, the value it sorts by and its CSS class."""

    content: str
    sort: float | str | None = None
    css: str = ""

    def render(self) -> str:
        sort = "" if self.sort is None else f' data-sort="{esc(self.sort)}"'
        css = f' class="{self.css}"' if self.css else ""
        return f"<td{css}{sort}>{self.content}</td>"


def text(value: object) -> Cell:
    return Cell(esc(value), str(value))


def with_interval(value: float | None, ci: Sequence[float] | None = None, css: str = "") -> Cell:
    """``0.123 [0.100, 0.150]``, sorted by the value."""
    shown = number(value)
    if ci is not None and len(ci) == 2:
        shown += f' <span class="ci">[{number(ci[0])}, {number(ci[1])}]</span>'
    sort = None if value is None or math.isnan(value) else float(value)
    return Cell(shown, sort, f"num {css}".strip())


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], sortable: bool = True) -> str:
    """A table whose header cells sort its rows when clicked (numbers by value)."""
    th = "".join(
        f'<th class="sortable">{esc(h)}</th>' if sortable else f"<th>{esc(h)}</th>" for h in headers
    )
    body = "".join("<tr>" + "".join(c.render() for c in row) + "</tr>" for row in rows)
    css = ' class="sortable"' if sortable else ""
    return f"<table{css}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def file_image(path: Path, caption: str, css: str = "figure") -> str:
    """A PNG file inlined as a figure with its caption."""
    return (
        f'<figure><img class="{css}" alt="{esc(caption)}" src="{png_uri(path.read_bytes())}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def thumbnail(image: torch.Tensor, size: int = 112) -> str:
    """[3, H, W] in [0, 1] -> an ``<img>`` of at most ``size`` px (PNG data URI)."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
    picture = Image.fromarray(array.astype(np.uint8))
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return f'<img alt="view" src="{png_uri(buffer.getvalue())}">'


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    x_label: str = "",
    y_range: tuple[float, float] | None = None,
    width: int = 360,
    height: int = 180,
    legend: bool = True,
) -> str:
    """Inline SVG: one polyline (with points) per named series of (x, y); axes with the extreme
    values as ticks."""
    xs = [float(x) for x, _ in series.values() for x in x]
    ys = [float(y) for _, y in series.values() for y in y if not math.isnan(float(y))]
    if not xs or not ys:
        return '<span class="muted">no data</span>'
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range or (min(ys), max(ys))
    x1, y1 = (x1 + 1 if x1 == x0 else x1), (y1 + 1e-9 if y1 == y0 else y1)
    left, right, top, bottom = 42, 8, 8, 28

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{left}" y="{height - 14}" font-size="10">{x0:g}</text>',
        f'<text x="{width - right}" y="{height - 14}" font-size="10" text-anchor="end">{x1:g}</text>',
        f'<text x="{(left + width) / 2}" y="{height - 3}" font-size="10" text-anchor="middle">{esc(x_label)}</text>',
    ]
    for i, (name, (x, y)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(
            f"{px(float(a)):.1f},{py(float(b)):.1f}"
            for a, b in zip(x, y, strict=True)
            if not math.isnan(float(b))
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'
        )
        if legend and len(series) > 1:
            parts.append(
                f'<text x="{left + 6}" y="{top + 12 + 12 * i}" font-size="10" fill="{colour}">{esc(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def page(title: str, sections: Sequence[tuple[str, str]], intro: str = "") -> str:
    """The whole document: a title, an intro paragraph and ``(heading, HTML)`` sections."""
    body = "".join(
        f'<section><h2 id="{esc(h.lower().replace(" ", "-"))}">{esc(h)}</h2>{c}</section>'
        for h, c in sections
        if c
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>{intro}{body}<script>{SCRIPT}</script></body></html>"
    )
