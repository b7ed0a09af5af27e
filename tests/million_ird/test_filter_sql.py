"""The consensus filter's SQL on a hand-made store: kept ids, counts, latest scores, selection files."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from million_ird.filter import FilterConfig, build_sql, run_filter
from million_ird.schema import SCORES
from million_ird.store import Store, StoreError

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
# image_id: (source, width, height, niqe, brisque, nima)
ROWS = {
    "a": ("web", 2000, 1500, 3.0, 20.0, 6.0),
    "b": ("web", 2000, 1500, 6.0, 20.0, 6.0),  # NIQE too high
    "c": ("web", 900, 1500, 3.0, 20.0, 6.0),  # shorter side too small
    "d": ("div2k", 2040, 1356, 3.0, 50.0, 4.0),  # BRISQUE too high, NIMA too low
    "e": ("div2k", 2040, 1356, None, None, None),  # never scored
    "f": ("div2k", 2040, 1356, 4.9, 34.9, 5.1),  # just inside every bound
}


def score_rows(image_id: str, at: datetime, error: str | None = None, **values: float | None) -> list[dict]:
    """One long `scores` row per metric (an error row per metric when `error` is given)."""
    return [{"image_id": image_id, "metric": m, "value": v, "fingerprint": f"hand-{m}", "error": error,
             "retryable": None if error is None else False, "scored_at": at} for m, v in values.items()]


def make_store(root: Path) -> Store:
    store = Store(root)
    store.append("images", pa.Table.from_pylist([{"image_id": k, "source": v[0]} for k, v in ROWS.items()]
                                                + [{"image_id": "x", "source": "web"}]))
    store.append("downloads", pa.Table.from_pylist(
        [{"image_id": k, "status": "ok", "path": f"files/{k}.png", "width": v[1], "height": v[2], "attempt": 1}
         for k, v in ROWS.items()] + [{"image_id": "x", "status": "failed", "attempt": 1, "error": "HTTP 404"}]))
    rows = [r for k, v in ROWS.items() if v[3] is not None
            for r in score_rows(k, T0, niqe=v[3], brisque=v[4], nima=v[5])]
    # an older row per metric that would keep "b" and a newer error row per metric for "a": neither may count
    rows += score_rows("b", T0 - timedelta(days=1), niqe=1.0, brisque=1.0, nima=9.0)
    rows += score_rows("a", T0 + timedelta(days=1), error="boom", niqe=None, brisque=None, nima=None)
    store.append("scores", pa.Table.from_pylist(rows, schema=SCORES))
    return store


def expected(cfg: FilterConfig) -> set[str]:
    keep = set()
    for k, (_, w, h, niqe, brisque, nima) in ROWS.items():
        ok = min(w, h) >= cfg.min_side
        for value, thr, lower in ((niqe, cfg.niqe, True), (brisque, cfg.brisque, True), (nima, cfg.nima, False)):
            if thr is not None:
                ok = ok and value is not None and (value < thr if lower else value > thr)
        keep |= {k} if ok else set()
    return keep


@pytest.mark.parametrize("cfg", [
    FilterConfig(),
    FilterConfig(niqe=5.0, nima=5.0),
    FilterConfig(brisque=60.0, min_side=800),
    FilterConfig(nima=3.0, min_side=0),
])
def test_kept_ids_match_the_rules(tmp_path: Path, cfg: FilterConfig) -> None:
    store = make_store(tmp_path / "s")
    record = run_filter(store, cfg)
    ids = set(store.query("SELECT image_id FROM selections").column("image_id").to_pylist())
    want = expected(cfg.with_defaults())
    assert ids == want and record["kept"] == len(want) and record["total"] == len(ROWS)


def test_defaults_counts_and_selection_json(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    record = run_filter(store, FilterConfig(name="hq"))
    assert record["thresholds"] == {"niqe": "< 5.0", "brisque": "< 35.0"}
    assert {r["source"]: (r["kept"], r["total"]) for r in record["per_source"]} == {"web": (1, 3), "div2k": (1, 3)}
    assert record["rejected_by"] == {"min_side": 1, "niqe": 1, "niqe_unscored": 1, "brisque": 1, "brisque_unscored": 1}
    saved = json.loads((store.root / "selections/hq/selection.json").read_text())
    assert saved["kept"] == 2 and saved["run_id"] == record["run_id"] and "million_ird" in saved["versions"]
    assert (store.root / "runs" / f"{record['run_id']}.json").is_file()


def test_dry_run_writes_nothing_and_nima_needs_scores(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    run_filter(store, FilterConfig(dry_run=True, name="dry"))
    assert not (store.root / "selections").exists()
    empty = Store(tmp_path / "e")
    empty.append("images", pa.Table.from_pylist([{"image_id": "a", "source": "web"}]))
    with pytest.raises(StoreError, match="no image .* has a nima score"):
        run_filter(empty, FilterConfig(nima=5.0))
    with pytest.raises(StoreError, match="--name"):
        run_filter(store, FilterConfig(name="../evil"))


def test_sql_is_one_statement_over_catalog() -> None:
    sql, params = build_sql(FilterConfig(niqe=4.0, nima=6.0, min_side=512))
    assert sql.count("SELECT") == 2 and "FROM catalog" in sql and params == [512, 4.0, 6.0]


@pytest.mark.parametrize("cfg", [FilterConfig(niqe=5.0, brisque=35.0, nima=5.0, min_side=1000), FilterConfig(nima=3.0)])
def test_sql_reads_the_rows_the_whole_catalog_gives(tmp_path: Path, cfg: FilterConfig) -> None:
    """catalog_base + latest_scores (what the filter reads) give the rows a query over `catalog` gives."""
    store = make_store(tmp_path / "s")
    sql, params = build_sql(cfg)
    flags = ["coalesce(least(width, height) >= ?, false) AS pass_side"]
    flags += [f"coalesce({m} {'>' if m == 'nima' else '<'} ?, false) AS pass_{m}" for m in cfg.thresholds()]
    names = ["pass_side"] + [f"pass_{m}" for m in cfg.thresholds()]
    outer = ", ".join(["image_id", "source", *cfg.thresholds(), *names]) + f", ({' AND '.join(names)}) AS kept"
    over_catalog = f"SELECT {outer} FROM (SELECT *, {', '.join(flags)} FROM catalog WHERE status = 'ok') ORDER BY image_id"
    assert store.query(sql, params).to_pylist() == store.query(over_catalog, params).to_pylist()
