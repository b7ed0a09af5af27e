"""The drawn parts of the HTML report, dependency-free: inline SVG charts, base64 JPEG thumbnails, HTML pieces.

The charts are hand-written SVG (no matplotlib needed, crisp at any zoom, a few kB each): a horizontal
bar chart, a histogram panel with threshold lines, a scatter plot with guide lines. `Svg` is a `str`
that Jupyter displays as a picture, so the notebooks show the same charts the report embeds.
`flat_cells` gives the per-cell verdict of the flat-region detector (`million_ird.flat`), the same
numbers `flat_ratio` averages, and `flat_overlay` shades those cells on a patch. `Pictures` reads what
the thumbnails show (originals, shard members, patches cut from originals); `read_selections` and
`read_patch_settings` read the thresholds and detector settings the charts draw from the store's records.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from million_ird.flat import CELL, flat_cells
from million_ird.images import MEMBER_REF, ImageError, member_ref, read_image, resolve, to_uint8

log = logging.getLogger(__name__)

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
LINE_COLOURS = ("#d62728", "#9467bd", "#2ca02c", "#ff7f0e", "#17becf")
FLAT_SHADE = np.array([255, 0, 80], np.float32)  # colour mixed into cells the detector calls flat
HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'  # keeps a label readable over bars and points
SVG_NS = "http://www.w3.org/2000/svg"
MARGIN = (44, 12, 26, 36)  # left, right, top, bottom (px) around a chart's plot area

CSS = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{border-bottom:1px solid #ccc;padding-top:.6em}h3{font-size:1em;margin:.8em 0 .3em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;font-size:.85em}
td.n{text-align:right}th{background:#f0f0f0}.none{color:#a00;font-style:italic}nav a{margin-right:1em}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:170px;font-size:.72em}
.grid figure.wide{width:auto;max-width:560px}figure img{display:block;border:2px solid #999}
figure.kept img{border-color:#2ca02c}figure.dropped img{border-color:#d62728}figcaption{overflow-wrap:anywhere}.missing{width:160px;height:100px;background:#eee;color:#999;
display:flex;align-items:center;justify-content:center}.charts{display:flex;flex-wrap:wrap;gap:10px}
.group{border:1px solid #ddd;padding:6px;margin:6px 0}code{background:#f4f4f4;padding:0 3px}
"""


class Svg(str):
    """An SVG document as a string; Jupyter renders it inline."""

    def document(self) -> str:
        """The SVG as a standalone file (with its XML namespace, which inline HTML does not need)."""
        return str(self).replace("<svg ", f'<svg xmlns="{SVG_NS}" ', 1)

    def _repr_svg_(self) -> str:
        return self.document()


def colour(i: int) -> str:
    """The i-th series colour."""
    return PALETTE[i % len(PALETTE)]


def _num(v: float) -> str:
    """A tick label: short and without trailing zeros."""
    if v == 0:
        return "0"
    if abs(v) >= 1e4 and float(v).is_integer():
        return f"{v / 1e6:g}M" if abs(v) >= 1e6 and v % 1e5 == 0 else f"{v / 1e3:g}k" if v % 100 == 0 else f"{v:.0f}"
    return f"{v:.4g}"


def ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About `n` round tick values covering [lo, hi] (whole numbers only when `integer`, e.g. for counts)."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = float(max(1, math.ceil(step)))
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


class _Frame:
    """Maps data coordinates to pixels inside a width x height chart with axes drawn."""

    def __init__(self, width: int, height: int, xlim: tuple[float, float], ylim: tuple[float, float],
                 count_axis: bool = False, legend: int = 0) -> None:
        self.w, self.h, self.count_axis = width, height, count_axis
        self.x0, self.x1 = xlim if xlim[1] > xlim[0] else (xlim[0] - 1, xlim[0] + 1)
        self.y0, self.y1 = ylim if ylim[1] > ylim[0] else (ylim[0] - 1, ylim[0] + 1)
        left, right, top, bottom = MARGIN
        self.left, self.right, self.top, self.bottom = left, width - right - legend, top, height - bottom

    def px(self, x: float) -> float:
        """Pixel column of data x."""
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def py(self, y: float) -> float:
        """Pixel row of data y."""
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def axes(self, xlabel: str, ylabel: str, title: str) -> list[str]:
        """Axis lines, ticks, labels and title as SVG elements."""
        out = [f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
               f'height="{self.bottom - self.top}" fill="#fafafa" stroke="#999"/>',
               f'<text x="{(self.left + self.right) / 2:.1f}" y="14" text-anchor="middle" font-weight="bold">{esc(title)}</text>',
               f'<text x="{(self.left + self.right) / 2:.1f}" y="{self.h - 4}" text-anchor="middle">{esc(xlabel)}</text>',
               f'<text x="10" y="{(self.top + self.bottom) / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 10 {(self.top + self.bottom) / 2:.1f})">{esc(ylabel)}</text>']
        for t in ticks(self.x0, self.x1):
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{self.bottom}" x2="{x:.1f}" y2="{self.bottom + 4}" stroke="#666"/>'
                       f'<text x="{x:.1f}" y="{self.bottom + 14}" text-anchor="middle">{_num(t)}</text>')
        for t in ticks(self.y0, self.y1, 4, integer=self.count_axis):
            y = self.py(t)
            out.append(f'<line x1="{self.left - 4}" y1="{y:.1f}" x2="{self.left}" y2="{y:.1f}" stroke="#666"/>'
                       f'<text x="{self.left - 6}" y="{y + 3:.1f}" text-anchor="end">{_num(t)}</text>')
        return out


def _svg(width: int, height: int, body: Sequence[str]) -> Svg:
    return Svg(f'<svg width="{width}" height="{height}" '
               f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">' + "".join(body) + "</svg>")


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, width: int = 560) -> Svg:
    """Horizontal bars, one per label, with the value written at the end of each."""
    row, left, top = 18, 170, 24
    height = top + row * len(labels) + 8
    top_value = max([float(v) for v in values] + [1.0])
    body = [f'<text x="{width / 2:.0f}" y="14" text-anchor="middle" font-weight="bold">{esc(title)}</text>']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        length = (width - left - 70) * float(value) / top_value
        shown = f"{float(value):,.0f}" if float(value).is_integer() else _num(float(value))
        body.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{esc(label)}</text>'
                    f'<rect x="{left}" y="{y + 2}" width="{length:.1f}" height="{row - 5}" fill="{colour(0)}"/>'
                    f'<text x="{left + length + 4:.1f}" y="{y + 12}">{shown}</text>')
    return _svg(width, height, body)


def histogram(counts: np.ndarray, edges: np.ndarray, title: str, xlabel: str,
              lines: Sequence[tuple[str, float]] = (), fill: str = PALETTE[0],
              width: int = 300, height: int = 190) -> Svg:
    """Bars of `counts` over bin `edges` (len(counts) + 1, e.g. from np.histogram), with labelled threshold lines."""
    counts = np.asarray(counts)
    frame = _Frame(width, height, (float(edges[0]), float(edges[-1])), (0.0, float(max(counts.max(initial=0), 1))),
                   count_axis=True)
    body = frame.axes(xlabel, "images", f"{title} (n={int(counts.sum())})")
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        if c:
            x, y = frame.px(float(a)), frame.py(float(c))
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(frame.px(float(b)) - x - 0.5, 0.5):.1f}" '
                        f'height="{frame.bottom - y:.1f}" fill="{fill}" fill-opacity="0.75"/>')
    for i, (label, value) in enumerate(lines):
        if frame.x0 <= value <= frame.x1:
            x, col = frame.px(value), LINE_COLOURS[i % len(LINE_COLOURS)]
            anchor, dx = ("end", -3) if x > (frame.left + frame.right) / 2 else ("start", 3)
            body.append(f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{frame.bottom}" stroke="{col}" '
                        f'stroke-width="1.5" stroke-dasharray="4 3"/><text x="{x + dx:.1f}" '
                        f'y="{frame.top + 11 + 11 * i}" fill="{col}" text-anchor="{anchor}"{HALO}>{esc(label)}</text>')
    return _svg(width, height, body)


def bin_edges(values: np.ndarray, lines: Sequence[float] = (), bins: int = 30) -> np.ndarray:
    """Shared bin edges covering every value and every threshold line."""
    finite = values[np.isfinite(values)] if values.size else values
    pool = np.concatenate([finite, np.asarray(list(lines), float)]) if len(lines) else finite
    if pool.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(pool.min()), float(pool.max())
    pad = (hi - lo) * 0.05 or 0.5
    return np.linspace(lo - pad, hi + pad, bins + 1)


def scatter(series: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str,
            lines: Sequence[tuple[str, float]] = (), width: int = 560, height: int = 400) -> Svg:
    """Points per series (name -> (x, y)), a legend, and labelled dashed guides at x = v and y = v."""
    xs = np.concatenate([s[0] for s in series.values()] + [np.asarray([v for _, v in lines], float)])
    ys = np.concatenate([s[1] for s in series.values()] + [np.asarray([v for _, v in lines], float)])
    top_x = float(xs.max(initial=1.0)) * 1.05
    top_y = float(ys.max(initial=1.0)) * 1.05
    names = [f"{name} ({len(x)})" for name, (x, _) in series.items()]
    legend = 24 + 6 * max((len(n) for n in names), default=0)  # beside the plot: never over the points
    frame = _Frame(width + legend, height, (0.0, top_x), (0.0, top_y), legend=legend)
    body = frame.axes(xlabel, ylabel, title)
    for i, (label, (x, y)) in enumerate(zip(names, series.values(), strict=True)):
        col = colour(i)
        body.extend(f'<circle cx="{frame.px(float(a)):.1f}" cy="{frame.py(float(b)):.1f}" r="2.5" fill="{col}" '
                    f'fill-opacity="0.6"/>' for a, b in zip(x, y, strict=True))
        body.append(f'<rect x="{frame.right + 10}" y="{frame.top + 6 + 14 * i}" width="9" height="9" fill="{col}"/>'
                    f'<text x="{frame.right + 23}" y="{frame.top + 14 + 14 * i}">{esc(label)}</text>')
    for i, (label, v) in enumerate(lines):
        col = LINE_COLOURS[i % len(LINE_COLOURS)]
        x, y = frame.px(v), frame.py(v)
        body.append(f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{frame.bottom}" stroke="{col}" '
                    f'stroke-dasharray="4 3"/><line x1="{frame.left}" y1="{y:.1f}" x2="{frame.right}" y2="{y:.1f}" '
                    f'stroke="{col}" stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{frame.bottom - 4 - 11 * i}" '
                    f'fill="{col}"{HALO}>{esc(label)}</text>')
    return _svg(width + legend, height, body)


def fit(img: np.ndarray, size: int) -> np.ndarray:
    """8-bit RGB copy of `img` scaled (never up) so its longer side is at most `size` px."""
    img = to_uint8(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    h, w = img.shape[:2]
    scale = min(1.0, size / max(h, w, 1))
    if scale < 1.0:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return img


def jpeg_uri(img: np.ndarray, size: int = 160, quality: int = 80) -> str:
    """A `data:image/jpeg;base64,...` URI of `img` fitted into `size` px."""
    small = fit(img, size)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(small[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a {small.shape} thumbnail as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def thumb_uri(img: np.ndarray | None, size: int = 160) -> str | None:
    """`jpeg_uri` of a picture, None for one that could not be read."""
    return None if img is None else jpeg_uri(img, size)


def flat_overlay(patch: np.ndarray, cells: np.ndarray, cell: int = CELL, alpha: float = 0.45) -> np.ndarray:
    """8-bit RGB patch with flat cells tinted and the cell grid drawn."""
    out = fit(patch, max(patch.shape[:2])).astype(np.float32)
    for r, c in zip(*np.nonzero(cells), strict=True):
        box = out[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
        box *= 1 - alpha
        box += alpha * FLAT_SHADE
    out = out.astype(np.uint8)
    line = max(1, out.shape[0] // 160)
    for k in range(1, cells.shape[0]):
        out[k * cell - line // 2: k * cell + (line + 1) // 2, :] = 255
    for k in range(1, cells.shape[1]):
        out[:, k * cell - line // 2: k * cell + (line + 1) // 2] = 255
    return out


def esc(value: object) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


def patch_label(row: dict[str, Any]) -> str:
    """A patch id as HTML that wraps after its image id (not inside the box coordinates)."""
    pid, image_id = str(row["patch_id"]), str(row.get("image_id") or "")
    return f"{esc(image_id)}<wbr>{esc(pid[len(image_id):])}" if image_id and pid.startswith(image_id) else esc(pid)


def none_yet(command: str, what: str = "") -> str:
    """The placeholder of an empty section: none yet — run `million-ird COMMAND`."""
    return f'<p class="none">{esc(what) + ": " if what else ""}none yet — run <code>million-ird {esc(command)}</code></p>'


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], attrs: Callable[[int, int], str] | None = None
               ) -> str:
    """An HTML table; numbers right-aligned; `attrs(row, col)` adds attributes to a cell."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, v in enumerate(row):
            cls = ' class="n"' if isinstance(v, (int, float)) else ""
            extra = attrs(i, j) if attrs else ""
            cells.append(f"<td{cls}{extra}>{v if isinstance(v, Markup) else esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


class Markup(str):
    """A string already in HTML (not escaped again by `html_table`)."""


def figure(uri: str | None, caption: str, kept: bool | None = None, attrs: str = "") -> str:
    """A thumbnail with its caption (already HTML); a grey box when the picture could not be read."""
    cls = {True: "kept", False: "dropped", None: ""}[kept]
    img = f'<img src="{uri}" alt=""{attrs}>' if uri else f'<div class="missing"{attrs}>unreadable</div>'
    return f'<figure class="{cls}">{img}<figcaption>{caption}</figcaption></figure>'


# the store's records the pictures draw from: thresholds (selections/*/selection.json), detector settings (runs/)
def read_selections(root: Path) -> list[dict[str, Any]]:
    """Every selections/NAME/selection.json, oldest first (name, thresholds as (op, value), min_side, ...)."""
    found = []
    for record in sorted((root / "selections").glob("*/selection.json")):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError) as exc:
            log.warning("report: skipping %s: %s", record, exc)
            continue
        rules = {}
        for metric, rule in (data.get("thresholds") or {}).items():
            op, _, value = str(rule).partition(" ")
            rules[metric] = (op, float(value))
        found.append({"name": data.get("name", record.parent.name), "rules": rules,
                      "min_side": data.get("min_side"), "kept": data.get("kept"), "total": data.get("total"),
                      "created_at": data.get("created_at", "")})
    return sorted(found, key=lambda s: (s["created_at"], s["name"]))


def read_patch_settings(root: Path) -> dict[str, dict[str, Any]]:
    """fingerprint -> the stage config of the patches runs recorded under runs/ (the latest run wins)."""
    settings: dict[str, dict[str, Any]] = {}
    for record in sorted((root / "runs").glob("*-patches-*.json")):
        try:
            cfg = json.loads(record.read_text()).get("config") or {}
        except (OSError, ValueError):
            continue
        for fp in (cfg.get("fingerprints") or {}).values():
            settings[fp] = cfg.get("stage") or {}
    return settings


def primary_selection(selections: list[dict[str, Any]], patch_settings: dict[str, dict[str, Any]]) -> str | None:
    """The selection the images grid compares against: the one patches were cut from, else the newest."""
    names = [s["name"] for s in selections]
    for stage in reversed(list(patch_settings.values())):
        if stage.get("selection") in names:
            return stage["selection"]
    return names[-1] if names else None


class Pictures:
    """Reads the pictures a report shows (originals, shard members, patches cut from originals), cached."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.unreadable: list[str] = []  # "path: why" of every picture that could not be read
        # two: originals can be large, and the sampled rows come sorted by image
        self._pixels = functools.lru_cache(maxsize=2)(self._read)

    def _read(self, path: str) -> np.ndarray | None:
        try:
            return read_image(path if MEMBER_REF.match(path) else resolve(self.root, path), rgb=True)
        except (ImageError, cv2.error) as exc:
            log.debug("report: cannot read %s: %s", path, exc)
            self.unreadable.append(f"{path}: {exc}")
            return None

    def pixels(self, path: str | None) -> np.ndarray | None:
        """The RGB pixels of a store path or shard member (None when missing or unreadable)."""
        return self._pixels(path) if path else None

    def patch(self, row: dict[str, Any]) -> np.ndarray | None:
        """A patch's pixels: from its shard member when kept, else cut from the original image."""
        if row.get("shard") and row.get("nbytes"):
            got = self.pixels(member_ref(resolve(self.root, row["shard"]), row["byte_offset"], row["nbytes"]))
            if got is not None:
                return got
        full = self.pixels(row.get("path"))
        if full is None or row.get("x") is None:
            return None
        x, y, s = row["x"], row["y"], row["size"]
        return full[y:y + s, x:x + s]


def image_caption(row: dict[str, Any], metrics: Sequence[str], sel: dict[str, Any]) -> str:
    """source, size, every score (a rule it fails marked ✗), and the dedup verdict."""
    side = sel.get("min_side") or 0
    size_bad = min(row["width"] or 0, row["height"] or 0) < side
    parts = [f"{esc(row['source'])} · {'✗ ' if size_bad else ''}{row['width']}×{row['height']}"]
    for m in metrics:
        v = row.get(m)
        op, limit = sel["rules"].get(m, ("", None))
        fails = limit is not None and (v is None or not (v < limit if op == "<" else v > limit))
        parts.append(f"{'✗ ' if fails else ''}{esc(m)} {'–' if v is None else f'{v:.2f}'}")
    if row.get("duplicate_dropped"):
        parts.append(f"✗ duplicate ({esc(row['duplicate_reason'])})")
    return f"<b>{esc(row['image_id'])}</b><br>" + "<br>".join(parts)


def grid(title: str, figures: Sequence[str]) -> str:
    """A heading and its figures in a wrapping row ("none" when there are none)."""
    return f"<h3>{esc(title)}</h3><div class='grid'>{''.join(figures) or '<p>none</p>'}</div>"


def overlay_figure(row: dict[str, Any], patch: np.ndarray | None, cell: int, threshold: float, size: int) -> str:
    """A patch beside itself with the cells the detector calls flat shaded, and a caption with the counts."""
    if patch is None:
        return figure(None, esc(row["patch_id"]))
    cells = flat_cells(patch, cell, threshold)
    caption = (f"<b>{patch_label(row)}</b> ({'kept' if row['kept'] else 'dropped'}): {int(cells.sum())} of "
               f"{cells.size} cells flat (stored flat_ratio {row['flat_ratio']:.3f}; {cell}-px cells, gradient "
               f"variance &lt; {threshold:g})")
    pair = (f"<img src='{jpeg_uri(patch, size)}' alt='' data-overlay-source='{esc(row['patch_id'])}'>"
            f"<img src='{jpeg_uri(flat_overlay(patch, cells, cell), size)}' alt='' data-overlay='{esc(row['patch_id'])}'>")
    return f"<figure class='wide'><div class='grid'>{pair}</div><figcaption>{caption}</figcaption></figure>"
