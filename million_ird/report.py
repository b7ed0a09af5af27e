"""`million-ird report`: one self-contained HTML page that shows what a store holds, stage by stage.

Sections: the funnel of counts per stage and source (and pairs per split and task); score histograms
per metric and source with every selection's thresholds drawn; a resolution scatter; thumbnails of
kept vs dropped images and of kept vs flat-dropped patches; flat-cell overlays; duplicate groups.
Charts are inline SVG and pictures base64 JPEG (`million_ird.report_plots`): the page loads nothing
from the network. A sample of N rows is the N whose md5("SEED:WHAT:ID") is smallest, computed in
DuckDB as a streaming top-N, so no list of ids is held in memory at any store size and the same store
and seed give the same page on any machine. The store is only read (no lock is taken); a table with
no rows yet shows which command fills it. The page is written through a temp name, then renamed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from tqdm import tqdm

from million_ird import report_plots as plots
from million_ird.atomic import atomic_path
from million_ird.flat import CELL, GRADIENT_VARIANCE
from million_ird.report_plots import CSS, Markup, esc, figure, html_table, none_yet
from million_ird.store import Store, StoreError, utc_now

log = logging.getLogger(__name__)

# funnel stage -> (the table whose rows it counts, the command that writes them): "none yet" when it is empty
STAGE_SOURCES = {"ingested": ("images", "ingest"), "downloaded ok": ("downloads", "download"),
                 "scored": ("scores", "score"), "in a selection": ("selections", "filter"),
                 "dropped by dedup": ("duplicates", "dedup"), "cut into patches (images)": ("patches", "patches"),
                 "patches": ("patches", "patches"), "patches kept": ("patches", "patches"),
                 "patches dropped flat": ("patches", "patches")}
# (labels, query giving source + one count per label), in funnel order; the selections go after "scored"
FUNNEL_QUERIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("ingested",), "SELECT source, count(*) FROM images GROUP BY 1"),
    (("rejected at ingest",), "SELECT source, count(*) FROM rejected GROUP BY 1"),
    (("downloaded ok", "download failed"), "SELECT i.source, count(*) FILTER (WHERE d.status = 'ok'), count(*) "
     "FILTER (WHERE d.status = 'failed') FROM latest_downloads d JOIN images i USING (image_id) GROUP BY 1"),
    (("scored",), "SELECT i.source, count(DISTINCT s.image_id) FROM latest_score_values s JOIN images i "
     "USING (image_id) GROUP BY 1"),
    (("dropped by dedup",), "SELECT i.source, count(DISTINCT d.image_id) FROM latest_duplicates d JOIN images i "
     "USING (image_id) WHERE NOT d.kept GROUP BY 1"),
    (("cut into patches (images)", "patches", "patches kept", "patches dropped flat"),
     "SELECT i.source, count(DISTINCT p.image_id) FILTER (WHERE p.error IS NULL), count(p.patch_id), count(*) "
     "FILTER (WHERE p.kept), count(*) FILTER (WHERE NOT p.kept AND p.error IS NULL) FROM latest_patches p "
     "JOIN images i USING (image_id) GROUP BY 1"),
)
SELECTION_SQL = ("SELECT s.selection, i.source, count(DISTINCT s.image_id) FROM selections s JOIN images i "
                 "USING (image_id) GROUP BY 1, 2")
BINS = 30  # histogram bins per metric (shared by its sources)
PAIRS_SQL = "SELECT recipe, split, task, count(*) FROM latest_pairs GROUP BY ALL ORDER BY ALL"


@dataclass(frozen=True)
class ReportConfig:
    """How many pictures per grid, the sampling seed, thumbnail size, overlays, scatter points, progress."""

    samples: int = 12
    seed: int = 0
    thumb: int = 160
    overlays: int = 4
    max_points: int = 5000
    progress: bool = False


@dataclass(frozen=True)
class Section:
    """One part of the page: anchor key, heading, HTML body, and whether its tables were still empty."""

    key: str
    title: str
    body: str
    empty: bool = False


@dataclass(frozen=True)
class ReportResult:
    """What `write_report` wrote: where, how many bytes, which sections (and which were empty)."""

    path: Path
    bytes: int
    sections: tuple[str, ...]
    empty: tuple[str, ...]

    def summary(self) -> str:
        """One line: path, size, sections."""
        empty = f"; none yet: {', '.join(self.empty)}" if self.empty else ""
        size = f"{self.bytes / 2**20:.2f} MiB" if self.bytes >= 2**20 else f"{self.bytes / 2**10:.0f} KiB"
        return (f"wrote {self.path} ({size}): {len(self.sections)} sections "
                f"({', '.join(self.sections)}){empty}")


class ReportContext:
    """The store, an open DuckDB connection over its views, the settings, and helpers the sections share."""

    def __init__(self, store: Store, con: duckdb.DuckDBPyConnection, cfg: ReportConfig) -> None:
        self.store, self.con, self.cfg = store, con, cfg
        self.selections = plots.read_selections(store.root)
        self.patch_settings = plots.read_patch_settings(store.root)
        self.metrics = [r[0] for r in self.rows("SELECT DISTINCT metric FROM latest_score_values ORDER BY 1")]
        self.primary = plots.primary_selection(self.selections, self.patch_settings)
        self.pictures = plots.Pictures(store.root)
        self._funnel: tuple[list[str], dict[str, dict[str, int]]] | None = None

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        """All rows of one query (fetched whole: the connection is free again afterwards)."""
        return self.con.execute(sql, list(params) if params else None).fetchall()

    def dicts(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """All rows of one query as dicts keyed by column name."""
        cur = self.con.execute(sql, list(params) if params else None)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _prefix(self, operation: str) -> str:
        return f"{self.cfg.seed}:{operation}:"

    def sample_rows(self, sql: str, params: Sequence[Any], key: str, operation: str,
                    n: int | None = None) -> list[dict[str, Any]]:
        """Up to `n` (default --samples) rows of `sql`: those whose md5(seed:operation:key) is smallest, by key."""
        n = self.cfg.samples if n is None else n
        rows = self.dicts(f"SELECT * FROM ({sql}) AS t ORDER BY md5(? || t.{key}), t.{key} LIMIT {int(n)}",
                          [*params, self._prefix(operation)])
        return sorted(rows, key=lambda r: r[key])

    def sample(self, ids: Sequence[str], operation: str, n: int | None = None) -> list[str]:
        """`sample_rows`' rule applied to ids in memory: the `n` with the smallest md5(seed:operation:id), sorted."""
        n = self.cfg.samples if n is None else n
        prefix = self._prefix(operation)
        return sorted(sorted(set(ids), key=lambda i: (hashlib.md5((prefix + i).encode()).hexdigest(), i))[:n])

    def paths(self, image_ids: Sequence[str]) -> dict[str, str]:
        """image_id -> its file (the catalog's path) for a few ids."""
        if not image_ids:
            return {}
        return dict(self.rows("SELECT image_id, path FROM catalog WHERE list_contains(?, image_id)",
                              [list(image_ids)]))

    def totals(self) -> tuple[list[str], dict[str, dict[str, int]]]:
        """The funnel: sources and, per stage in order, the count per source (computed once)."""
        if self._funnel is None:
            self._funnel = funnel_counts(self)
        return self._funnel

    def detector(self, fingerprint: str | None) -> tuple[int, float, float]:
        """(cell, flat_threshold, max_flat) of the patches run with this fingerprint (defaults if unknown)."""
        stage = self.patch_settings.get(fingerprint or "", {})
        return (int(stage.get("cell", CELL)), float(stage.get("flat_threshold", GRADIENT_VARIANCE)),
                float(stage.get("max_flat", 0.5)))


def funnel_counts(ctx: ReportContext) -> tuple[list[str], dict[str, dict[str, int]]]:
    """The sources and, per funnel stage (in order), the count per source."""
    sources = [r[0] for r in ctx.rows("SELECT source FROM images UNION SELECT source FROM rejected ORDER BY 1")]
    counts: dict[str, dict[str, int]] = {}
    for labels, sql in FUNNEL_QUERIES:
        rows = ctx.rows(sql)
        for k, label in enumerate(labels):
            counts[label] = {row[0]: row[k + 1] for row in rows}
        if labels == ("scored",):
            chosen = ctx.rows(SELECTION_SQL)
            for sel in ctx.selections or [{"name": None}]:
                label = f"in selection {sel['name']}" if sel["name"] else "in a selection"
                counts[label] = {src: n for name, src, n in chosen if name == sel["name"]}
    return sources, counts


def funnel_section(ctx: ReportContext) -> Section:
    """Counts per stage and source, a bar chart of the totals, and pairs per split and task."""
    sources, counts = ctx.totals()
    if not sources:
        return Section("funnel", "Funnel", none_yet("ingest --manifest DIR ..."), empty=True)
    rows = []
    empty = {t for t, command in STAGE_SOURCES.values()  # never run: no rows and no run record (a dedup that
             if not ctx.rows(f"SELECT 1 FROM {t} LIMIT 1") and not ctx.store.latest_run(command)}  # found none ran)
    for label, per in counts.items():
        total = sum(per.values())
        table, command = STAGE_SOURCES.get(label, ("", ""))
        hint = Markup(none_yet(command)) if table in empty else ""
        rows.append([label, *[per.get(s, 0) for s in sources], total, hint])
    if not any(r[-1] for r in rows):
        rows = [r[:-1] for r in rows]
    header = ["stage", *sources, "total", ""][:len(rows[0])]
    keys = [*sources, "total"]

    def attrs(i: int, j: int) -> str:
        if 1 <= j <= len(keys):
            return f' data-stage="{esc(rows[i][0])}" data-source="{esc(keys[j - 1])}"'
        return ""

    chart = plots.bar_chart([r[0] for r in rows], [r[len(sources) + 1] for r in rows], "all sources")
    pairs = ctx.rows(PAIRS_SQL)
    pair_html = (html_table(["recipe", "split", "task", "pairs"], pairs,
                            lambda i, j: f' data-pairs="{esc(pairs[i][1])}/{esc(pairs[i][2])}"' if j == 3 else "")
                 if pairs else none_yet("splits"))
    body = (html_table(header, rows, attrs) + f'<div class="charts">{chart}</div>'
            + "<h3>Pairs per split and task</h3>" + pair_html)
    return Section("funnel", "Funnel", body)


def scores_section(ctx: ReportContext) -> Section:
    """One histogram per metric and source, every selection's threshold on that metric drawn."""
    if not ctx.metrics:
        return Section("scores", "Score histograms", none_yet("score"), empty=True)
    parts = []
    for metric in ctx.metrics:
        lines = [(f"{s['name']} {s['rules'][metric][0]} {s['rules'][metric][1]:g}", s["rules"][metric][1])
                 for s in ctx.selections if metric in s["rules"]]
        lo, hi = ctx.rows("SELECT min(value), max(value) FROM latest_score_values WHERE metric = ?", [metric])[0]
        edges = plots.bin_edges(np.asarray([lo, hi], float), [v for _, v in lines], BINS)
        binned = ctx.rows("SELECT i.source, least(greatest(floor((s.value - ?) / ?), 0), ?)::INT, count(*) FROM "
                          "latest_score_values s JOIN images i USING (image_id) WHERE s.metric = ? GROUP BY 1, 2",
                          [float(edges[0]), float(edges[1] - edges[0]), BINS - 1, metric])
        counts: dict[str, np.ndarray] = {}
        for src, b, n in binned:
            counts.setdefault(src, np.zeros(BINS, np.int64))[b] = n
        charts = [plots.histogram(c, edges, f"{metric} · {src}", metric, lines, plots.colour(i))
                  for i, (src, c) in enumerate(sorted(counts.items()))]
        parts.append(f"<h3>{esc(metric)}</h3><div class='charts'>{''.join(charts)}</div>")
    return Section("scores", "Score histograms", "".join(parts))


def _total(ctx: ReportContext, label: str) -> int:
    return sum(ctx.totals()[1].get(label, {}).values())


def resolution_section(ctx: ReportContext) -> Section:
    """Width vs height of the ok images per source (a seeded sample of max_points / sources per source)."""
    per_source = max(1, ctx.cfg.max_points // max(1, len(ctx.totals()[0])))  # every source shows, however small
    data = ctx.dicts("SELECT d.image_id, i.source, d.width, d.height FROM latest_downloads d JOIN images i "
                     "USING (image_id) WHERE d.status = 'ok' AND d.width IS NOT NULL QUALIFY row_number() OVER "
                     "(PARTITION BY i.source ORDER BY md5(? || d.image_id), d.image_id) <= ?",
                     [f"{ctx.cfg.seed}:resolution:", per_source])
    if not data:
        return Section("resolution", "Resolution", none_yet("download"), empty=True)
    series: dict[str, tuple[list[int], list[int]]] = {}
    for row in sorted(data, key=lambda r: (r["source"], r["image_id"])):
        xs, ys = series.setdefault(row["source"], ([], []))
        xs.append(row["width"])
        ys.append(row["height"])
    sides = sorted({s["min_side"] for s in ctx.selections if s["min_side"]})
    chart = plots.scatter({k: (np.asarray(x), np.asarray(y)) for k, (x, y) in series.items()},
                          f"width vs height ({len(data)} of {_total(ctx, 'downloaded ok')} ok images)", "width (px)",
                          "height (px)", [(f"min side {v}", float(v)) for v in sides])
    return Section("resolution", "Resolution", f'<div class="charts">{chart}</div>')


def _quoted(names: Sequence[str]) -> str:
    return "".join(', c."' + n.replace('"', '""') + '"' for n in names)


def images_section(ctx: ReportContext) -> Section:
    """Seeded samples of the ok images kept by the primary selection (and not by dedup) vs the others."""
    title = "Images kept vs dropped"
    if ctx.primary is None:
        return Section("images", title, none_yet("filter"), empty=True)
    sel = next(s for s in ctx.selections if s["name"] == ctx.primary)
    base = ("SELECT c.image_id, c.source, c.path, c.width, c.height, c.duplicate_dropped, c.duplicate_reason"
            f"{_quoted(ctx.metrics)}, (s.image_id IS NOT NULL AND NOT c.duplicate_dropped) AS kept FROM catalog c "
            "LEFT JOIN (SELECT DISTINCT image_id FROM selections WHERE selection = ?) s USING (image_id) "
            "WHERE c.status = 'ok'")
    totals = dict(ctx.rows(f"SELECT kept, count(*) FROM ({base}) GROUP BY 1", [ctx.primary]))
    rules = [f"{m} {op} {v:g}" for m, (op, v) in sel["rules"].items()] + (
        [f"min side {sel['min_side']}"] if sel["min_side"] else [])
    body = [f"<p>Against selection <b>{esc(ctx.primary)}</b> ({esc(', '.join(rules))}); "
            "dedup drops count as dropped. ✗ marks what fails.</p>"]
    for kept in (True, False):
        rows = ctx.sample_rows(f"SELECT * FROM ({base}) WHERE kept = ?", [ctx.primary, kept], "image_id",
                               f"images-{'kept' if kept else 'dropped'}")
        figures = [figure(plots.thumb_uri(ctx.pictures.pixels(r["path"]), ctx.cfg.thumb),
                          plots.image_caption(r, ctx.metrics, sel), kept, f' data-image="{esc(r["image_id"])}"')
                   for r in rows]
        body.append(plots.grid(f"{'kept' if kept else 'dropped'} ({len(rows)} of {totals.get(kept, 0)})", figures))
    return Section("images", title, "".join(body))


PATCH_SQL = ("SELECT patch_id, image_id, x, y, size, flat_ratio, kept, shard, byte_offset, nbytes, fingerprint "
             "FROM latest_patches WHERE error IS NULL AND patch_id IS NOT NULL")


def sample_patches(ctx: ReportContext, where: str, operation: str, n: int | None = None) -> list[dict[str, Any]]:
    """A seeded sample of the patches matching `where`, each with its image's `path`."""
    rows = ctx.sample_rows(f"{PATCH_SQL} AND {where}", [], "patch_id", operation, n)
    paths = ctx.paths(sorted({r["image_id"] for r in rows}))
    return [{**r, "path": paths.get(r["image_id"])} for r in rows]


def patches_section(ctx: ReportContext) -> Section:
    """Seeded samples of kept and flat-dropped patches with their flat ratio."""
    title = "Patches kept vs dropped flat"
    totals = {True: _total(ctx, "patches kept"), False: _total(ctx, "patches dropped flat")}
    if not any(totals.values()):
        return Section("patches", title, none_yet("patches"), empty=True)
    body = []
    for kept in (True, False):
        rows = sample_patches(ctx, "kept" if kept else "NOT kept", f"patches-{'kept' if kept else 'dropped'}")
        figures = [figure(plots.thumb_uri(ctx.pictures.patch(r), ctx.cfg.thumb),
                          f"<b>{plots.patch_label(r)}</b><br>flat_ratio {r['flat_ratio']:.3f} "
                          f"({'≤' if kept else '>'} {ctx.detector(r['fingerprint'])[2]:g})", kept,
                          f' data-patch="{esc(r["patch_id"])}"') for r in rows]
        body.append(plots.grid(f"{'kept' if kept else 'dropped flat'} ({len(rows)} of {totals[kept]})", figures))
    return Section("patches", title, "".join(body))


def overlays_section(ctx: ReportContext) -> Section:
    """A few patches with flat cells (any patches when none has one), beside the same patch with them shaded."""
    title = "Flat cells"
    if not _total(ctx, "patches"):
        return Section("flat", title, none_yet("patches"), empty=True)
    rows = sample_patches(ctx, "flat_ratio > 0", "overlays", ctx.cfg.overlays)
    note = "" if rows else "<p>no patch has a flat cell; showing patches without any.</p>"
    figures = [plots.overlay_figure(r, ctx.pictures.patch(r), *ctx.detector(r["fingerprint"])[:2], 2 * ctx.cfg.thumb)
               for r in rows or sample_patches(ctx, "true", "overlays", ctx.cfg.overlays)]
    return Section("flat", title, note + "<p>Cells the detector calls flat are shaded.</p>"
                   f"<div class='grid'>{''.join(figures)}</div>")


def _duplicate_groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Dropped rows by group: the kept image's id, or `test:<image_id>` for a test-set match."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r["kept"]:
            key = r["group_id"] if r["group_id"] and r["reason"] != "test-set" else f"test:{r['image_id']}"
            groups.setdefault(key, []).append(r)
    return groups


def duplicates_section(ctx: ReportContext) -> Section:
    """Counts per reason, then seeded sample groups: the kept image beside its dropped copies (or test file)."""
    title = "Duplicate groups"
    rows = ctx.dicts("SELECT image_id, group_id, kept, reason, matched, distance FROM latest_duplicates "
                     "ORDER BY image_id")
    if not rows:
        run = ctx.store.latest_run("dedup")
        body = f"<p>dedup run <code>{esc(run)}</code> found no duplicates and no test-set matches.</p>" if run else ""
        return Section("duplicates", title, body or none_yet("dedup"), empty=not run)
    reasons = sorted({r["reason"] for r in rows})
    counts = [[reason, sum(1 for r in rows if r["reason"] == reason and not r["kept"])] for reason in reasons]
    groups = _duplicate_groups(rows)
    keys = ctx.sample(list(groups), "duplicates")
    paths = ctx.paths(sorted({k for k in keys if not k.startswith("test:")}
                             | {m["image_id"] for k in keys for m in groups[k]}))

    def thumb(path: str | None, caption: str, kept: bool | None, attrs: str = "") -> str:
        return figure(plots.thumb_uri(ctx.pictures.pixels(path), ctx.cfg.thumb), caption, kept, attrs)

    out = [html_table(["reason", "dropped"], counts), f"<p>{len(groups)} groups; showing {len(keys)}.</p>"]
    for key in keys:
        members = groups[key]
        if key.startswith("test:"):
            first = thumb(members[0]["matched"], f"test file<br>{esc(Path(members[0]['matched']).name)}", None,
                          f' title="{esc(members[0]["matched"])}"')
        else:
            first = thumb(paths.get(key), f"<b>{esc(key)}</b><br>kept", True)
        shown = [thumb(paths.get(m["image_id"]), f"<b>{esc(m['image_id'])}</b><br>{esc(m['reason'])} · distance {m['distance']}",
                       False, f' data-duplicate="{esc(m["image_id"])}"') for m in members]
        out.append(f"<div class='group grid'>{first}{''.join(shown)}</div>")
    return Section("duplicates", title, "".join(out))


SECTIONS: tuple[Callable[[ReportContext], Section], ...] = (
    funnel_section, scores_section, resolution_section, images_section, patches_section, overlays_section,
    duplicates_section)


def page(store: Store, cfg: ReportConfig, sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    nav = " ".join(f'<a href="#{s.key}">{esc(s.title)}</a>' for s in sections)
    parts = [f'<section id="{s.key}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections]
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>million-ird report: {esc(store.root.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>million-ird report: {esc(store.root)}</h1><p>generated {utc_now():%Y-%m-%d %H:%M UTC} · seed "
            f"{cfg.seed} · {cfg.samples} samples per grid</p><nav>{nav}</nav>{''.join(parts)}</body></html>")


def build_sections(store: Store, cfg: ReportConfig) -> list[Section]:
    """Every section of the report, built over one read-only connection to the store."""
    with store.connect() as con:
        ctx = ReportContext(store, con, cfg)
        out = []
        for build in tqdm(SECTIONS, desc="report", unit="section", disable=not cfg.progress):
            out.append(build(ctx))
    if ctx.pictures.unreadable:
        log.warning("report: %d pictures could not be read (shown as grey boxes), e.g. %s",
                    len(ctx.pictures.unreadable), ctx.pictures.unreadable[0])
    return out


def write_report(store: Store, out: Path, cfg: ReportConfig = ReportConfig()) -> ReportResult:
    """Render the report of `store` and write it to `out` (temp name, then rename; never over the store's files)."""
    out = store.check_output(out)
    if out.is_dir():
        raise StoreError(f"--out {out} is a folder; name the HTML file to write, e.g. {out / 'report.html'}")
    sections = build_sections(store, cfg)
    text = page(store, cfg, sections)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return ReportResult(out, out.stat().st_size, tuple(s.key for s in sections),
                        tuple(s.key for s in sections if s.empty))
