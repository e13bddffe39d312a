"""Building blocks for self-contained HTML reports (no scripts, no external files):
inline SVG histograms, base64 JPEG thumbnails, tables."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

from PIL import Image

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}
.gallery{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0 20px}
figure{margin:0;width:150px;font-size:11px;word-break:break-word}
figure img{width:150px;height:150px;object-fit:contain;background:#eee;display:block;border:1px solid #ccc}
.note{color:#666;font-size:13px}
"""


class Raw(str):
    """HTML that table() and cell() insert as is (links, anchors); build it with esc()."""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def cell(value: object) -> str:
    """A value as table-cell HTML: escaped unless it is Raw."""
    return value if isinstance(value, Raw) else esc(value)


def link(anchor: str, text: object) -> Raw:
    """A link to the element with id `anchor` on the same page."""
    return Raw(f"<a href='#{esc(anchor)}'>{esc(text)}</a>")


def anchored(anchor: str, text: object) -> Raw:
    """`text` carrying the id `anchor`, for links from elsewhere on the page."""
    return Raw(f"<span id='{esc(anchor)}'>{esc(text)}</span>")


def fmt(value: float | None, digits: int = 3) -> str:
    """A table cell for a float that may be missing."""
    return "" if value is None else f"{value:.{digits}f}"


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>")


def thumbnail_data_uri(image: Image.Image, size: int = 150, quality: int = 80) -> str:
    """A JPEG thumbnail (longest side `size` px) as a data: URI."""
    img = image.convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def figure(uri: str | None, caption: str) -> str:
    img = f"<img src='{uri}' alt='{esc(caption)}'>" if uri else "<div class='note'>image unavailable</div>"
    return f"<figure>{img}<figcaption>{esc(caption)}</figcaption></figure>"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def legend_x(names: Sequence[str], right_edge: float, char_w: float = 7.0) -> float:
    """Left x of a legend whose longest name (11 px text, at most ~7 px per character) ends at
    `right_edge`: long checkpoint names are not cut off by the SVG's edge."""
    return max(0.0, right_edge - 15 - char_w * max((len(n) for n in names), default=0))


def svg_bars(labels: Sequence[str], series: dict[str, Sequence[float]], title: str,
             x_label: str, y_label: str, log_y: bool = False, width: int = 640,
             height: int = 260) -> str:
    """Grouped bar chart as inline SVG: one bar group per label, one colour per series
    (e.g. a histogram, or several histograms overlaid side by side)."""
    import math

    colours = ["#3b6ea8", "#d0792b", "#4a9a5b", "#a83b5b", "#7a5ba8"]
    left, bottom, top, right = 56, 40, 28, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series.values() for v in s]
    tf = (lambda v: math.log10(1 + v)) if log_y else (lambda v: v)
    vmax = max((tf(v) for v in values), default=1) or 1
    n, k = max(len(labels), 1), max(len(series), 1)
    group_w = plot_w / n
    bar_w = max(group_w * 0.8 / k, 1)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"role='img' aria-label='{esc(title)}'>",
             f"<text x='{width / 2}' y='16' text-anchor='middle' font-size='13'>{esc(title)}</text>",
             f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#444'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + plot_h}' stroke='#444'/>"]
    for si, (name, vals) in enumerate(series.items()):
        for i, v in enumerate(vals):
            h = plot_h * tf(v) / vmax
            x = left + i * group_w + group_w * 0.1 + si * bar_w
            parts.append(f"<rect x='{x:.1f}' y='{top + plot_h - h:.1f}' width='{bar_w:.1f}' "
                         f"height='{h:.1f}' fill='{colours[si % len(colours)]}'>"
                         f"<title>{esc(name)} {esc(labels[i])}: {v:g}</title></rect>")
    step = max(1, n // 12)
    for i in range(0, n, step):
        x = left + (i + 0.5) * group_w
        parts.append(f"<text x='{x:.1f}' y='{top + plot_h + 14}' text-anchor='middle' "
                     f"font-size='10'>{esc(labels[i])}</text>")
    raw_max = max(values, default=0)
    parts.append(f"<text x='{left - 4}' y='{top + 8}' text-anchor='end' font-size='10'>{raw_max:g}</text>")
    parts.append(f"<text x='{left + plot_w / 2}' y='{height - 6}' text-anchor='middle' font-size='11'>"
                 f"{esc(x_label)}</text>")
    parts.append(f"<text x='12' y='{top + plot_h / 2}' font-size='11' transform='rotate(-90 12 "
                 f"{top + plot_h / 2})' text-anchor='middle'>{esc(y_label)}{' (log)' if log_y else ''}</text>")
    if len(series) > 1:
        x0 = legend_x(list(series), left + plot_w)
        for si, name in enumerate(series):
            y = top + 4 + 14 * si
            parts.append(f"<rect x='{x0}' y='{y}' width='10' height='10' "
                         f"fill='{colours[si % len(colours)]}'/><text x='{x0 + 15}' "
                         f"y='{y + 9}' font-size='11'>{esc(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def svg_lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
              x_label: str, y_label: str, y_max: float | None = None, width: int = 640,
              height: int = 300, legend: str = "top") -> str:
    """Line chart as inline SVG: one polyline per series of (x values, y values). legend:
    "top" or "bottom" right corner (ROC curves: "bottom", where no good curve runs)."""
    colours = ["#3b6ea8", "#d0792b", "#4a9a5b", "#a83b5b", "#7a5ba8"]
    left, bottom, top, right = 56, 40, 28, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for xv, _ in series.values() for x in xv]
    ys = [y for _, yv in series.values() for y in yv]
    x_max = max(xs, default=1) or 1
    y_top = y_max if y_max is not None else (max(ys, default=1) or 1)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"role='img' aria-label='{esc(title)}'>",
             f"<text x='{width / 2}' y='16' text-anchor='middle' font-size='13'>{esc(title)}</text>",
             f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#444'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + plot_h}' stroke='#444'/>",
             f"<text x='{left - 4}' y='{top + 8}' text-anchor='end' font-size='10'>{y_top:g}</text>",
             f"<text x='{left + plot_w}' y='{top + plot_h + 14}' text-anchor='end' font-size='10'>{x_max:g}</text>",
             f"<text x='{left + plot_w / 2}' y='{height - 6}' text-anchor='middle' font-size='11'>{esc(x_label)}</text>",
             f"<text x='12' y='{top + plot_h / 2}' font-size='11' transform='rotate(-90 12 "
             f"{top + plot_h / 2})' text-anchor='middle'>{esc(y_label)}</text>"]
    for si, (name, (xv, yv)) in enumerate(series.items()):
        pts = " ".join(f"{left + plot_w * x / x_max:.1f},{top + plot_h * (1 - y / y_top):.1f}"
                       for x, y in zip(xv, yv, strict=True))
        colour = colours[si % len(colours)]
        parts.append(f"<polyline points='{pts}' fill='none' stroke='{colour}' stroke-width='2'>"
                     f"<title>{esc(name)}</title></polyline>")
        y = top + 4 + 14 * si if legend == "top" else top + plot_h - 18 - 14 * (len(series) - 1 - si)
        x0 = legend_x(list(series), left + plot_w)
        parts.append(f"<rect x='{x0}' y='{y}' width='10' height='10' fill='{colour}'/>"
                     f"<text x='{x0 + 15}' y='{y + 9}' font-size='11'>{esc(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)
