# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploring a dataset store
# Opens a store through `million_ird.store.Store` (the DuckDB views `images`, `catalog`, `scores`,
# `latest_patches`, ...), counts what each stage wrote, plots the score distributions per source and the
# resolutions, and shows a few sample patches read straight from their tar shards.
# Set `MILLION_IRD_STORE` to the store (default `manifests/demo/store`, what `million-ird demo` builds) and
# `EXPLORE_OUT` to where the figures go (default `notebooks/_out`). The charts are the HTML report's own
# SVG charts (`million_ird.report_plots`, no plotting library needed): inline in Jupyter, files everywhere.
# `million-ird report --manifest STORE --out report.html` puts all of this (and more) on one page.

# %%
import os
from pathlib import Path

import numpy as np

from degradations.rng import sample_rng
from million_ird import report_plots as plots
from million_ird.images import member_ref, write_png
from million_ird.store import Store
from million_ird.summary import format_table

STORE = Path(os.environ.get("MILLION_IRD_STORE", "manifests/demo/store"))
OUT = Path(os.environ.get("EXPLORE_OUT", "notebooks/_out"))
SEED = 0
try:
    from IPython import get_ipython
    from IPython.display import SVG, Image, display

    INLINE = get_ipython() is not None
except ImportError:
    INLINE = False


def show(name: str, svg: plots.Svg) -> Path:
    """Write a chart to OUT/explore_NAME.svg (and display it when running in Jupyter)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"explore_{name}.svg"
    path.write_text(svg.document())
    if INLINE:
        display(SVG(svg.document()))
    return path


store = Store(STORE)
if not store.root.is_dir():
    raise SystemExit(f"{store.root}: no store here; run `million-ird demo` or set MILLION_IRD_STORE")
con = store.connect()
counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
          for t in ("images", "rejected", "downloads", "scores", "selections", "latest_duplicates", "latest_patches",
                    "latest_pairs")}
print(store.root)
print(format_table([counts]))

# %% [markdown]
# ## Images per source and download status

# %%
per_source = con.sql("SELECT source, coalesce(status, 'not tried') AS status, count(*) AS images, "
                     "sum(bytes) AS bytes FROM catalog GROUP BY ALL ORDER BY ALL").to_arrow_table().to_pylist()
print(format_table(per_source))

# %% [markdown]
# ## Score distributions per source
# One histogram per metric and source over the latest value of every image (the `latest_score_values` view).

# %%
scores = con.execute("SELECT s.metric, i.source, s.value FROM latest_score_values s JOIN images i USING (image_id) "
                     "ORDER BY 1, 2").fetchall()
score_charts = {}
for metric in sorted({m for m, _, _ in scores}):
    values = np.array([v for m, _, v in scores if m == metric], float)
    edges = plots.bin_edges(values)
    for i, source in enumerate(sorted({s for m, s, _ in scores if m == metric})):
        mine = np.array([v for m, s, v in scores if m == metric and s == source], float)
        score_charts[f"{metric}_{source}"] = show(f"{metric}_{source}", plots.histogram(
            np.histogram(mine, edges)[0], edges, f"{metric} · {source}", metric, fill=plots.colour(i)))
print("score charts:", ", ".join(score_charts) or "none yet (run `million-ird score`)")

# %% [markdown]
# ## Resolutions of the downloaded images

# %%
sizes = con.execute("SELECT source, width, height FROM catalog WHERE status = 'ok' AND width IS NOT NULL "
                    "ORDER BY 1").fetchall()
series = {src: (np.array([w for s, w, _ in sizes if s == src]), np.array([h for s, _, h in sizes if s == src]))
          for src in sorted({s for s, _, _ in sizes})}
resolution_chart = show("resolution", plots.scatter(series, f"width vs height ({len(sizes)} ok images)",
                                                      "width (px)", "height (px)")) if sizes else None
print(format_table([{"source": s, "images": len(x), "median width": float(np.median(x)),
                     "median height": float(np.median(y))} for s, (x, y) in series.items()]))

# %% [markdown]
# ## Duplicates found by the dedup run in force
# `latest_duplicates` holds the rows of the latest finished `million-ird dedup` run: every image it grouped,
# the kept one (`kept`) and the dropped copies with why (exact, near or test-set) and the Hamming distance.

# %%
duplicates = con.sql("SELECT d.reason, i.source, d.image_id, d.matched, d.distance FROM latest_duplicates d "
                     "JOIN images i USING (image_id) WHERE NOT d.kept ORDER BY ALL").to_arrow_table().to_pylist()
for row in duplicates:
    if row["reason"] == "test-set":  # the matched test file: its name is enough
        row["matched"] = Path(row["matched"]).name
print(format_table(duplicates) if duplicates else "no duplicates (or no dedup run yet: `million-ird dedup`)")

# %% [markdown]
# ## A few kept patches
# Drawn with a generator seeded by (SEED, "notebook", "patches"); each is read from its tar shard by byte
# offset (`SHARD.tar#OFFSET+NBYTES`), exactly as training reads it.

# %%
patches = con.execute("SELECT patch_id, shard, byte_offset, nbytes, flat_ratio FROM latest_patches WHERE kept "
                      "ORDER BY patch_id").fetchall()
picked = []
if patches:
    rng = sample_rng(SEED, "notebook", "patches")
    picked = [patches[i] for i in sorted(rng.choice(len(patches), size=min(4, len(patches)), replace=False))]
pictures = plots.Pictures(store.root)
pixels = [pictures.pixels(member_ref(store.root / shard, offset, n)) for _, shard, offset, n, _ in picked]
tiles = [plots.fit(px, 192) for px in pixels if px is not None]
for patch_id, _, _, _, ratio in picked:
    print(f"{patch_id}: flat_ratio {ratio:.3f}")
sheet_path = None
if tiles:
    height = max(t.shape[0] for t in tiles)
    sheet = np.hstack([np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0)), constant_values=255) for t in tiles])
    sheet_path = write_png(OUT / "explore_patches.png", sheet)
    if INLINE:
        display(Image(filename=str(sheet_path)))
else:
    print("no patches yet (run `million-ird patches`)")
con.close()
