"""Columnar ingest gives exactly the rows, reasons and errors of the row-wise reference (`add_url_row`)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from million_ird.sources.columnar import UrlColumns, check_urls, json_values, url_rows
from million_ird.sources.common import (
    IngestConfig,
    IngestError,
    SourceBatch,
    url_ids,
    url_image_id,
    url_problem,
)
from million_ird.sources.ingest import IngestInputs, ingest
from million_ird.sources.lists import add_url_row
from million_ird.store import Store

URLS = [
    "https://a.example/1.jpg", "HTTP://B.Example:8080/x?y=1#z", "https://a.example/1.jpg", None, "", "   ",
    " https://lead.example/x.jpg", "https://trail.example/x.jpg\u00a0", "\u00a0https://nbsp.example/x.jpg",
    "https://sp ace.example/x.jpg", "https://tab.example/\tx.jpg", "ftp://f.example/x", "mailto:someone@example.org",
    "images/rel.jpg", "https:///nohost.jpg", "https://:80/x", "http://[::1]/x.jpg", "http://[::1/x.jpg",
    "https://user:pw@host.example/x", "https://@/x", "https://例え.jp/画像.jpg", "https://a.example?q=1",
    "https://a.example#frag", "https://a.example", "http://a.example:/x", "https://a.example/%20x.jpg",
    "https://a_b.example/x", "https://a.example/x\u3000", "javascript:alert(1)", "https://host:abc/x",
    "https://a.example/\x7fdel", "https://small.example/1.jpg", "https://marked.example/1.jpg",
]
N = len(URLS)


def _mixed() -> pa.Table:
    """Every kind of cell ingest meets, one row per URL above."""
    rng = np.random.default_rng(3)
    floats = [1e-5, 1e16, 0.1, -0.0, math.nan, math.inf, 1.0, 123456789.123, 2.5e-4, 1e15, -7e22, None]
    strings = ['plain', 'quo"te', "back\\slash", "new\nline", "\x01ctrl", "ünïcode ✓", "", None, "tab\tx"]
    width = [2048.0, 1024.7, None, math.nan, 800.0, 3000.0] * 6
    return pa.table({
        "URL": pa.array(URLS, pa.string()),
        "TEXT": pa.array([None if i % 7 == 0 else f"caption {i}" for i in range(N)]),
        "WIDTH": pa.array(width[:N - 2] + [500.0, 3000.0], pa.float64()),
        "HEIGHT": pa.array([1536, 2000, 1024, None, 600, 2000] * 5 + [1024, 400, 2000], pa.int64()),
        "pwatermark": pa.array([0.1, 0.2, None, 0.6, 0.05] * 6 + [0.1, 0.1, 0.95]),
        "similarity": pa.array([floats[i % len(floats)] for i in range(N)], pa.float64()),
        "score32": pa.array(rng.random(N).astype(np.float32)),
        "hash": pa.array(rng.integers(-2**63, 2**63 - 1, N)),
        "big": pa.array([2**64 - 1 - i for i in range(N)], pa.uint64()),
        "flag": pa.array([None if i % 5 == 0 else bool(i % 2) for i in range(N)]),
        "note": pa.array([strings[i % len(strings)] for i in range(N)]),
        "lang": pa.array(["en", "de", None] * 11).dictionary_encode(),
        "when": pa.array([dt.datetime(2024, 1, 1, 12, i % 60) for i in range(N)], pa.timestamp("ms", tz="UTC")),
        "tags": pa.array([[i, i + 1] if i % 3 else None for i in range(N)], pa.list_(pa.int32())),
        "meta": pa.array([{"a": i, "b": "x"} for i in range(N)]),
        "blob": pa.array([b"\x00\xff" * (i % 2) for i in range(N)], pa.binary()),
        "price": pa.array([decimal.Decimal(f"{i}.25") for i in range(N)], pa.decimal128(6, 2)),
        "empty": pa.nulls(N),
    })


COLS = {"url": "URL", "width": "WIDTH", "height": "HEIGHT", "caption": "TEXT", "watermark": "pwatermark"}


def _reference(table: pa.Table, cfg: IngestConfig, cols: dict) -> tuple[list[dict], list[dict]]:
    batch = SourceBatch()
    for i, row in enumerate(table.to_pylist()):
        add_url_row(batch, cfg, row, cols, f"in.parquet:row {i}")
    images, rejected = batch.tables()
    return images.to_pylist(), rejected.to_pylist()


def _columnar(table: pa.Table, cfg: IngestConfig, cols: dict) -> tuple[list[dict], list[dict]]:
    origins = pa.array([f"in.parquet:row {i}" for i in range(table.num_rows)])
    batch, start = SourceBatch(), 0
    for rb in table.to_batches(max_chunksize=10):  # several batches, as a big file is read
        batch.add_tables(*url_rows(rb, UrlColumns(**cols), cfg, origins.slice(start, rb.num_rows)))
        start += rb.num_rows
    images, rejected = batch.tables()
    return images.to_pylist(), rejected.to_pylist()


@pytest.mark.parametrize("cfg", [IngestConfig(source="s"), IngestConfig(source="s", min_side=1024),
                                 IngestConfig(source="s", min_side=1024, max_watermark=0.5),
                                 IngestConfig(source="s", max_watermark=0.15)])
def test_columnar_rows_equal_row_wise_reference(cfg: IngestConfig) -> None:
    """Same image rows (ids, sizes, captions, extra JSON, origins) and rejected rows, in the same order."""
    table = _mixed()
    ref_images, ref_rejected = _reference(table, cfg, COLS)
    images, rejected = _columnar(table, cfg, COLS)
    assert images == ref_images
    assert rejected == ref_rejected
    assert len(images) >= 5 and len(rejected) >= 10


def _row(origin: str) -> int:
    return int(origin.rsplit(":row ", 1)[1])


def test_mixed_input_rows_match_expectations(tmp_path: Path) -> None:
    """End to end through `ingest`: rows, reasons and order; a second, unfiltered run keeps first occurrences."""
    path = tmp_path / "in.parquet"
    pq.write_table(_mixed(), path, row_group_size=7)
    store = Store(tmp_path / "store")
    stats = ingest(store, IngestInputs(parquet=(path,)), IngestConfig(source="mix", min_side=1024, max_watermark=0.5))
    rows = store.query("SELECT * FROM images").to_pylist()
    assert [_row(r["origin"]) for r in rows] == [0, 1, 7, 24, 25, 29, 30]
    assert [(r["url"], r["width"], r["height"], r["caption"]) for r in rows[:3]] == [
        ("https://a.example/1.jpg", 2048, 1536, None), ("HTTP://B.Example:8080/x?y=1#z", 1024, 2000, "caption 1"),
        ("https://trail.example/x.jpg", 1024, 2000, None)]  # 1024.7 truncated; trailing NBSP stripped
    assert rows[0]["image_id"] == url_image_id("https://a.example/1.jpg")
    assert json.loads(rows[0]["extra"]) == {
        "pwatermark": 0.1, "similarity": 1e-05, "score32": float(np.float32(_mixed()["score32"][0].as_py())),
        "hash": _mixed()["hash"][0].as_py(), "big": 2**64 - 1, "flag": None, "note": "plain", "lang": "en",
        "when": "2024-01-01 12:00:00+00:00", "tags": None, "meta": {"a": 0, "b": "x"}, "blob": "b''",
        "price": "0.25", "empty": None}
    rejected = store.query("SELECT origin, url, reason FROM rejected").to_pylist()
    assert [_row(r["origin"]) for r in rejected] == [r for r in range(N) if r not in (0, 1, 7, 24, 25, 29, 30)]
    reasons = {_row(r["origin"]): (r["url"], r["reason"]) for r in rejected}
    assert reasons[2] == ("https://a.example/1.jpg", "below --min-side 1024: declared Nonex1024")
    assert reasons[3] == (None, "empty URL") and reasons[5] == ("   ", "empty URL")
    assert reasons[6] == (" https://lead.example/x.jpg", "URL contains whitespace")
    assert reasons[8] == ("https://nbsp.example/x.jpg", "below --min-side 1024: declared Nonex1024")
    assert reasons[17] == ("http://[::1/x.jpg", "unparseable URL (Invalid IPv6 URL)")
    assert reasons[19] == ("https://@/x", "URL has no host")
    assert reasons[21][1] == "below --min-side 1024: declared NonexNone"
    assert reasons[32] == ("https://marked.example/1.jpg", "above --max-watermark 0.5: pwatermark 0.950")
    assert (stats["read"], stats["new"], stats["rejected"], stats["duplicates_in_input"]) == (N, 7, 26, 0)
    assert stats["rejected_by_reason"]["below --min-side 1024"] == 9
    again = ingest(store, IngestInputs(parquet=(path,)), IngestConfig(source="mix"))
    assert (again["new"], again["duplicates_in_input"], again["already_in_store"]) == (11, 1, 7)
    assert (again["rejected"], again["rejected_new"]) == (14, 0)  # the URL problems were recorded by the first run
    added = store.query("SELECT origin FROM images").column(0).to_pylist()[7:]
    assert [_row(o) for o in added] == [8, 16, 18, 20, 21, 22, 23, 26, 27, 31, 32]  # row 2 repeats row 0: skipped


def test_url_checks_equal_url_problem() -> None:
    """The regular expression only vouches for URLs `url_problem` accepts; the rest go through it."""
    urls = URLS + [f"{s}://{h}{p}" for s in ("http", "https", "HtTpS", "file", "h")
                   for h in ("a.b", "", "[::1]", "x:99", "a@b", "-", ".", "a.b:")
                   for p in ("", "/", "/a b", "?x", "#", "/\x00")]
    clean, problem = check_urls(pa.array(urls, pa.string()))
    assert problem.to_pylist() == [url_problem(u) for u in urls]
    assert clean.to_pylist() == [None if url_problem(u) else u.strip() for u in urls]


def test_json_values_equal_json_dumps() -> None:
    """Floats over every magnitude (Arrow's digits, Python's exponents), ints, strings, nested values."""
    rng = np.random.default_rng(0)
    floats = np.concatenate([rng.normal(0, 1, 20000), rng.random(20000) * 10.0 ** rng.integers(-12, 25, 20000),
                             [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e15, 9.99999999999999e14, 1e16,
                              5e-324, 1.7976931348623157e308, math.nan, -math.inf, 2.0**53]])
    with np.errstate(over="ignore"):
        halves = pa.array(floats.astype(np.float32))  # overflow to inf on purpose
    for values in (pa.array(floats), halves, pa.array([1, None, -5], pa.int8()),
                   pa.array(["a", None, '"\\\x1f', "\u2028"]), pa.array([[1.5, None]], pa.list_(pa.float64()))):
        expected = [json.dumps(v, default=str, ensure_ascii=False) for v in values.to_pylist()]
        assert json_values(values).to_pylist() == expected


def test_url_ids_equal_url_image_id() -> None:
    urls = ["https://a.example/1.jpg", "https://例え.jp/画像.jpg"]
    assert url_ids(pa.array(urls)) == [url_image_id(u) for u in urls]


@pytest.mark.parametrize("cells,row,message", [
    (["1", "x", "2", "y"], 1, "column 'WIDTH' holds 'x', not a number"),
    (["1", "2", "inf", "y"], 2, "column 'WIDTH' holds 'inf', out of range for a size"),
    ([" 7 ", "1_000", "nan", "1e3"], None, None),
])
def test_numeric_text_errors_name_the_first_bad_row(cells: list[str], row: int | None, message: str | None) -> None:
    """Rows with a refused URL are never read further; the first bad cell of an accepted row stops ingest."""
    table = pa.table({"URL": ["https://a.example/0", "https://a.example/1", "https://a.example/2", "ftp://x/3"],
                      "WIDTH": cells, "HEIGHT": ["1", "2", "3", "4"]})
    cols = {"url": "URL", "width": "WIDTH", "height": "HEIGHT", "caption": None, "watermark": None}
    cfg = IngestConfig(source="s")
    if message is None:
        assert _columnar(table, cfg, cols) == _reference(table, cfg, cols)
        return
    with pytest.raises(IngestError) as columnar:
        _columnar(table, cfg, cols)
    assert str(columnar.value).startswith(f"in.parquet:row {row}: {message}")
    if "out of range" not in message:  # the row-wise reference gives the same line
        with pytest.raises(IngestError) as reference:
            _reference(table, cfg, cols)
        assert str(reference.value) == str(columnar.value)
