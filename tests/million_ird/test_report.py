"""`million-ird report`: counts equal SQL, one <img> per sampled picture, nothing loaded from the network,
empty tables say which command fills them, the page renders in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from million_ird.cli import report as report_cli
from million_ird.driver import DriverConfig
from million_ird.filter import FilterConfig, run_filter
from million_ird.report import ReportConfig, write_report
from million_ird.stages.patches import PatchesConfig, run_patches
from million_ird.store import Store, new_run_id

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
W, H = 384, 256  # 3 x 2 patches of 128 px, 2 x 2 cells of 64 px each
# image id -> (source, niqe, brisque, kind of pixels)
IMAGES = {
    "div-a": ("DIV2K", 3.0, 20.0, "texture"), "div-b": ("DIV2K", 3.5, 25.0, "half-flat"),
    "div-copy": ("DIV2K", 3.0, 20.0, "texture"), "div-blur": ("DIV2K", 7.5, 60.0, "texture"),
    "web-a": ("laion-hr", 4.5, 30.0, "texture"), "web-near": ("laion-hr", 4.4, 31.0, "texture"),
    "web-small": ("laion-hr", 3.0, 20.0, "small"), "web-leak": ("laion-hr", 3.2, 22.0, "texture"),
}
DUPLICATES = [  # (image_id, group_id, kept, reason, matched, distance)
    ("div-a", "div-a", True, "exact", None, 0), ("div-copy", "div-a", False, "exact", "div-a", 0),
    ("web-a", "web-a", True, "near", None, 0), ("web-near", "web-a", False, "near", "web-a", 6),
    ("web-leak", None, False, "test-set", "TESTFILE", 4),
]


def _pixels(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "small":
        return rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    if kind == "half-flat":
        img[:128] = 90  # the top row of patches is flat: dropped by the detector
    return img


def build_store(root: Path) -> Store:
    """Two sources, a failed download, a rejected row, scores, two selections, duplicates, patches, pairs."""
    store = Store(root / "store")
    images, downloads, scores = [], [], []
    for i, (image_id, (source, niqe, brisque, kind)) in enumerate(IMAGES.items()):
        pixels = _pixels(kind, i)
        rel = f"files/{source}/{image_id}.png"
        (store.root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(store.root / rel), pixels)
        images.append({"image_id": image_id, "source": source, "url": f"http://example.invalid/{image_id}.png"})
        downloads.append({"image_id": image_id, "status": "ok", "path": rel, "format": "png",
                          "width": pixels.shape[1], "height": pixels.shape[0], "attempt": 1})
        scores += [{"image_id": image_id, "metric": m, "value": v, "fingerprint": m} for m, v in
                   (("niqe", niqe), ("brisque", brisque))]
    images.append({"image_id": "web-gone", "source": "laion-hr", "url": "http://example.invalid/gone.png"})
    downloads.append({"image_id": "web-gone", "status": "failed", "error": "HTTP 404", "attempt": 1})
    store.append("images", pa.Table.from_pylist(images))
    store.append("rejected", pa.Table.from_pylist([{"source": "laion-hr", "url": "ftp://x", "origin": "row 9",
                                                    "reason": "scheme"}]))
    store.append("downloads", pa.Table.from_pylist(downloads))
    store.append("scores", pa.Table.from_pylist(scores))
    run_filter(store, FilterConfig(niqe=5, brisque=35, min_side=256, name="demo"))
    run_filter(store, FilterConfig(niqe=4, min_side=256, name="strict"))
    test_file = root / "testsets" / "Set5" / "leak.png"
    test_file.parent.mkdir(parents=True)
    cv2.imwrite(str(test_file), _pixels("texture", 99))
    dups = [dict(zip(("image_id", "group_id", "kept", "reason", "matched", "distance"), d, strict=True))
            for d in DUPLICATES]
    run_id = new_run_id("dedup")  # a finished dedup run: its rows, then its run record
    for d in dups:
        d.update(matched=str(test_file) if d["matched"] == "TESTFILE" else d["matched"], fingerprint="f",
                 run_id=run_id)
    store.append("duplicates", pa.Table.from_pylist(dups), run_id)
    store.save_run("dedup", run_id, {}, {})
    run_patches(store, PatchesConfig(size=128, selection="demo"), DriverConfig(progress=False))
    kept = store.query("SELECT shard, byte_offset, nbytes, patch_id FROM latest_patches WHERE kept LIMIT 3").to_pylist()
    store.append("pairs", pa.Table.from_pylist([
        {"pair_id": f"p{i}", "recipe": "synthetic", "split": "train" if i else "test", "task": "denoise",
         "clean": f"{p['shard']}#{p['byte_offset']}+{p['nbytes']}"} for i, p in enumerate(kept)]))
    return store


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path, str]:
    """The store, and its report rendered with 3 samples per grid."""
    root = tmp_path_factory.mktemp("report")
    store = build_store(root)
    out = root / "elsewhere" / "report.html"
    result = write_report(store, out, ReportConfig(samples=3, seed=0))
    assert result.path == out.resolve() and result.bytes == out.stat().st_size
    assert result.empty == ()
    return store, out, out.read_text(encoding="utf-8")


def _funnel_cells(page: str) -> dict[tuple[str, str], int]:
    cells = re.findall(r'<td class="n" data-stage="([^"]+)" data-source="([^"]+)">(\d+)</td>', page)
    return {(stage, source): int(n) for stage, source, n in cells}


def test_funnel_counts_equal_sql(built: tuple[Store, Path, str]) -> None:
    store, _, page = built
    cells = _funnel_cells(page)
    expected_sql = {
        "ingested": "SELECT count(*) FROM images WHERE source = ?",
        "rejected at ingest": "SELECT count(*) FROM rejected WHERE source = ?",
        "downloaded ok": "SELECT count(*) FROM catalog WHERE status = 'ok' AND source = ?",
        "scored": "SELECT count(DISTINCT image_id) FROM scores JOIN images USING (image_id) WHERE source = ?",
        "in selection demo": "SELECT count(*) FROM selections JOIN images USING (image_id) "
                             "WHERE selection = 'demo' AND source = ?",
        "in selection strict": "SELECT count(*) FROM selections JOIN images USING (image_id) "
                               "WHERE selection = 'strict' AND source = ?",
        "dropped by dedup": "SELECT count(*) FROM catalog WHERE duplicate_dropped AND source = ?",
        "patches kept": "SELECT count(*) FROM patches JOIN images USING (image_id) WHERE kept AND source = ?",
        "patches dropped flat": "SELECT count(*) FROM patches JOIN images USING (image_id) "
                                "WHERE NOT kept AND error IS NULL AND source = ?",
    }
    with store.connect() as con:
        for stage, sql in expected_sql.items():
            for source in ("DIV2K", "laion-hr"):
                assert cells[(stage, source)] == con.execute(sql, [source]).fetchall()[0][0], (stage, source)
            assert cells[(stage, "total")] == cells[(stage, "DIV2K")] + cells[(stage, "laion-hr")]
    assert cells[("ingested", "total")] == 9 and cells[("dropped by dedup", "total")] == 3
    assert cells[("patches dropped flat", "DIV2K")] == 3  # the flat top row of div-b
    assert re.search(r'data-pairs="train/denoise">2<', page) and re.search(r'data-pairs="test/denoise">1<', page)


def test_one_img_per_sampled_patch_and_image(built: tuple[Store, Path, str]) -> None:
    store, _, page = built
    kept = {r["patch_id"]: r["kept"] for r in store.query("SELECT patch_id, kept FROM latest_patches").to_pylist()}
    shown = re.findall(r'<figure class="(kept|dropped)"><img src="data:image/jpeg;base64,[^"]+" alt="" '
                       r'data-patch="([^"]+)">', page)
    assert len(shown) == min(3, sum(kept.values())) + min(3, sum(not k for k in kept.values()))
    assert all(kept[pid] is (cls == "kept") for cls, pid in shown)
    images = re.findall(r'<figure class="(kept|dropped)"><img src="data:image/jpeg[^"]+" alt="" data-image="([^"]+)"',
                        page)
    assert {cls for cls, _ in images} == {"kept", "dropped"} and len(images) == 6
    for cls, image_id in images:
        selected = image_id in {"div-a", "div-b", "web-a"}  # in `demo` and not dropped by dedup
        assert selected is (cls == "kept"), image_id
    assert len(re.findall(r"data-overlay='", page)) == 3  # the flat-cell overlays: patches with flat cells


def test_no_external_urls_and_page_is_small(built: tuple[Store, Path, str]) -> None:
    _, out, page = built
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert re.findall(r"""src=["']([^"']{0,11})""", page) and all(
        s.startswith("data:image/") for s in re.findall(r"""src=["']([^"']{0,11})""", page))
    assert "<script" not in page and "url(" not in page
    assert out.stat().st_size < 3 * 2**20
    thumbs = re.findall(r"""src=["']data:image/jpeg;base64,([^"']+)""", page)
    assert len(thumbs) >= 12
    for data in thumbs:  # every embedded picture decodes
        img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and min(img.shape[:2]) > 0


def test_thresholds_duplicates_and_overlay_are_shown(built: tuple[Store, Path, str]) -> None:
    _, _, page = built
    for label in ("demo &lt; 5", "demo &lt; 35", "strict &lt; 4", "min side 256"):
        assert label in page
    for image_id in ("div-copy", "web-near", "web-leak"):
        assert f'data-duplicate="{image_id}"' in page
    assert "test-set · distance 4" in page and "near · distance 6" in page
    assert "none yet" not in page


def test_sampling_follows_the_seed(built: tuple[Store, Path, str], tmp_path: Path) -> None:
    store, _, page = built
    picks = []
    for seed in (0, 0, 1, 2):
        out = write_report(store, tmp_path / f"r{seed}.html", ReportConfig(samples=2, seed=seed)).path
        picks.append(tuple(re.findall(r'data-patch="([^"]+)"', out.read_text())))
    assert picks[0] == picks[1] and len(set(picks)) > 1


def test_store_with_only_ingested_images(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append("images", pa.Table.from_pylist([{"image_id": f"i{i}", "source": "web"} for i in range(3)]))
    result = write_report(store, tmp_path / "r.html", ReportConfig())
    page = result.path.read_text()
    assert _funnel_cells(page)[("ingested", "web")] == 3
    for command in ("download", "score", "filter", "dedup", "patches", "splits"):
        assert f"none yet — run <code>million-ird {command}" in page, command
    assert set(result.empty) == {"scores", "resolution", "images", "patches", "flat", "duplicates"}
    run_id = new_run_id("dedup")  # a finished dedup run that found nothing: not "none yet"
    store.save_run("dedup", run_id, {}, {"dropped": 0})
    result = write_report(store, tmp_path / "r.html", ReportConfig())
    page = result.path.read_text()
    assert "none yet — run <code>million-ird dedup" not in page and f"dedup run <code>{run_id}</code> found no" in page
    assert "duplicates" not in result.empty and "none yet — run <code>million-ird patches" in page


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    report_cli.register(app)
    return app


def test_cli_writes_the_page_and_leaves_the_store_alone(built: tuple[Store, Path, str], tmp_path: Path) -> None:
    store = built[0]
    before = sorted((p.relative_to(store.root), p.stat().st_mtime_ns) for p in store.root.rglob("*"))
    out = tmp_path / "page.html"
    res = CliRunner().invoke(_app(), ["report", "--manifest", str(store.root), "--out", str(out), "--samples", "2",
                                      "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output and "7 sections" in res.output and out.stat().st_size > 10_000
    assert sorted((p.relative_to(store.root), p.stat().st_mtime_ns) for p in store.root.rglob("*")) == before
    assert not list(tmp_path.glob(".tmp-*"))
    res = CliRunner().invoke(_app(), ["report", "--manifest", str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code == 2 and "no dataset directory" in res.output
    res = CliRunner().invoke(_app(), ["report", "--manifest", str(store.root), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder" in res.output and str(tmp_path / "report.html") in res.output
    for inside in ("runs/page.html", "patches", "report"):  # a store's record, table, or a non-.html top file
        res = CliRunner().invoke(_app(), ["report", "--manifest", str(store.root), "--out", str(store.root / inside)])
        assert res.exit_code == 2 and "inside the store" in res.output, res.output
    assert sorted((p.relative_to(store.root), p.stat().st_mtime_ns) for p in store.root.rglob("*")) == before


def render(page: Path, shot: Path, height: int, profile: Path) -> list[str]:
    """Screenshot `page` in headless Chromium; returns the console messages it logged."""
    assert CHROMIUM is not None
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           f"--screenshot={shot}", f"--window-size=1280,{height}", page.as_uri()],
                          capture_output=True, text=True, timeout=180, check=False)
    assert shot.exists(), proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_page_renders_in_headless_chromium(built: tuple[Store, Path, str], tmp_path: Path) -> None:
    _, out, _ = built
    shot = tmp_path / "shot.png"
    # the page has no script: any console message (Chromium logs them as INFO:CONSOLE) is an error
    console = render(out, shot, 4000, tmp_path / "profile")
    assert not console, console
    if os.environ.get("REPORT_SCREENSHOT"):  # keep the screenshot to look at
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (4000, 1280)
    assert float(img.std()) > 20  # not a blank page: text, charts and thumbnails
    thumbs = img[:, :, 1].astype(int) - img[:, :, 2].astype(int)  # the green borders of kept thumbnails
    assert (thumbs > 100).sum() > 1000
    # the console check can fail: this Chromium does report a page's console error
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body>x<script>console.error('broken')</script></body></html>")
    assert any("broken" in line for line in render(bad, tmp_path / "bad.png", 200, tmp_path / "profile"))
