"""Ingest through the real CLI: re-runs never duplicate rejected rows; wrongly typed columns stop with one line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curation_helpers import encode
from typer.testing import CliRunner

from million_ird.cli import app
from million_ird.store import Store

LIST = {
    "URL": ["https://a.example/1.jpg", "file:///etc/passwd", "ftp://c.example/4.jpg", "https://d.example/small.jpg",
            "https://d.example/marked.jpg", None, "https://a.example/2.jpg"],
    "WIDTH": [2048, 2000, 2000, 800, 3000, 2000, 1500],
    "HEIGHT": [1536, 2000, 2000, 600, 2000, 2000, 1500],
    "pwatermark": [0.1, 0.1, 0.1, 0.1, 0.95, 0.1, 0.2],
}


def run(*args: str) -> tuple[int, str, str]:
    """The real `million-ird` Typer app, in process."""
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def rejected_rows(store: Path) -> list[tuple]:
    rows = Store(store).query("SELECT source, origin, url, path, reason FROM rejected ORDER BY ALL").to_pylist()
    return [tuple(r.values()) for r in rows]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*.parquet")}


def test_three_identical_ingests_leave_the_same_rejected_rows(tmp_path: Path) -> None:
    laion = tmp_path / "laion.parquet"
    pq.write_table(pa.table(LIST), laion)
    urls = tmp_path / "urls.txt"
    urls.write_text("https://x.example/a.jpg\nfile:///tmp/secret.png\ndata:image/png;base64,AA\n")
    folder = tmp_path / "DIV2K"
    folder.mkdir()
    (folder / "big.png").write_bytes(encode("PNG", 64, 64))
    (folder / "tiny.png").write_bytes(encode("PNG", 16, 16))
    store = tmp_path / "store"
    commands = [
        ("--parquet", str(laion), "--parquet", str(laion), "--min-side", "1024", "--max-watermark", "0.5"),
        ("--urls", str(urls)),
        ("--folder", str(folder), "--min-side", "32"),
    ]
    counts, outputs = [], []
    for _ in range(3):
        for extra in commands:
            code, out, err = run("ingest", "-m", str(store), *extra)
            assert code == 0, out + err
            outputs.append(out)
        counts.append(len(rejected_rows(store)))
        code, out, _ = run("stats", "-m", str(store), "--json")
        assert code == 0 and json.loads(out)["rejected_at_ingest"] == counts[-1]
    # laion: file://, ftp://, small, marked, null URL (the second --parquet of the same file adds none); urls: 2; folder: 1
    assert counts == [8, 8, 8]
    assert len(set(rejected_rows(store))) == 8
    assert Store(store).query("SELECT count(*) AS n FROM images").to_pylist() == [{"n": 4}]
    runs = [json.loads(p.read_text())["stats"] for p in sorted((store / "runs").glob("*.json"))]
    laion_runs = sorted((r["rejected"], r["rejected_new"]) for r in runs if r["source"] == "laion-hr")
    assert laion_runs == [(10, 0), (10, 0), (10, 5)]  # each run reads 2 x 5; only the first records them
    # a different reason for the same row is new information: it is recorded
    code, out, err = run("ingest", "-m", str(store), "--parquet", str(laion), "--min-side", "1600")
    assert code == 0, out + err
    reasons = [r[4] for r in rejected_rows(store) if r[2] == "https://a.example/2.jpg"]
    assert reasons == ["below --min-side 1600: declared 1500x1500"]


@pytest.mark.parametrize("column,values,flag,detail", [
    ("URL", pa.array([1, 2, 3], pa.int64()), "--url-col", "int64"),
    ("URL", pa.array([None, None, None], pa.null()), "--url-col", "null"),
    ("URL", pa.array([b"https://a.example/1.jpg"] * 3, pa.binary()), "--url-col", "binary"),
    ("WIDTH", pa.array([True, False, True]), "--width-col", "bool"),
    ("HEIGHT", pa.array([dt.datetime(2024, 1, 1)] * 3, pa.timestamp("ms")), "--height-col", "timestamp[ms]"),
    ("pwatermark", pa.array(["low", "high", "low"]), "--max-watermark", "holds 'low'"),
])
def test_wrongly_typed_column_is_one_line_error_before_anything_is_written(
        tmp_path: Path, column: str, values: pa.Array, flag: str, detail: str) -> None:
    data = {"URL": pa.array([f"https://a.example/{i}.jpg" for i in range(3)]), "WIDTH": pa.array([2000] * 3),
            "HEIGHT": pa.array([2000] * 3), "pwatermark": pa.array([0.1] * 3)}
    data[column] = values
    bad = tmp_path / "typed.parquet"
    pq.write_table(pa.table(data), bad)
    seed = tmp_path / "seed.txt"
    seed.write_text("https://seed.example/1.jpg\nftp://seed.example/2.jpg\n")
    store = tmp_path / "store"
    assert run("ingest", "-m", str(store), "--urls", str(seed))[0] == 0
    before = snapshot(store)
    code, out, err = run("ingest", "-m", str(store), "--parquet", str(bad), "--min-side", "100",
                         "--max-watermark", "0.5")
    assert code == 2, out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert str(bad) in errors[0] and repr(column) in errors[0] and detail in errors[0] and flag in errors[0]
    assert snapshot(store) == before


def test_string_like_and_numeric_columns_are_accepted(tmp_path: Path) -> None:
    """Dictionary-encoded URL strings, large strings, float and decimal sizes, numeric-string sizes."""
    table = pa.table({
        "URL": pa.array(["https://a.example/1.jpg", "https://a.example/2.jpg"]).dictionary_encode(),
        "link": pa.array(["https://b.example/1.jpg", "https://b.example/2.jpg"], pa.large_string()),
        "WIDTH": pa.array([2000.0, 1024.0]), "HEIGHT": pa.array([1500, 1024], pa.decimal128(6, 0)),
        "w": pa.array(["2000", "1024"]), "h": pa.array([1500, 1024], pa.uint16()),
    })
    path = tmp_path / "ok.parquet"
    pq.write_table(table, path)
    store = tmp_path / "store"
    code, out, err = run("ingest", "-m", str(store), "--parquet", str(path), "--min-side", "1024")
    assert code == 0, out + err
    code, out, err = run("ingest", "-m", str(store), "--parquet", str(path), "--url-col", "link",
                         "--width-col", "w", "--height-col", "h", "--source", "b", "--min-side", "1024")
    assert code == 0, out + err
    rows = Store(store).query("SELECT url, width, height FROM images ORDER BY url").to_pylist()
    assert [(r["url"], r["width"], r["height"]) for r in rows] == [
        ("https://a.example/1.jpg", 2000, 1500), ("https://a.example/2.jpg", 1024, 1024),
        ("https://b.example/1.jpg", 2000, 1500), ("https://b.example/2.jpg", 1024, 1024)]
