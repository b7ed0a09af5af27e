"""`million-ird migrate` turns 0.2 wide scores parts into long rows: same catalog, errors per metric, exact resume."""

from __future__ import annotations

from pathlib import Path

import cv2
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skimage.data
from typer.testing import CliRunner

from million_ird import iqa
from million_ird.atomic import TMP_PREFIX
from million_ird.cli import app
from million_ird.driver import DriverConfig
from million_ird.schema import TS
from million_ird.stages.score import ScoreConfig, metric_fingerprint, run_score
from million_ird.store import JOURNAL, Store, StoreError

QUIET = DriverConfig(progress=False)
BOTH = ScoreConfig(metrics=("niqe", "brisque"))
# the scores schema million-ird 0.2 wrote: one row per image and run, a column per metric, comma lists
OLD_SCORES = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("niqe", pa.float64()),
    pa.field("brisque", pa.float64()),
    pa.field("nima", pa.float64()),
    pa.field("metrics", pa.string()),
    pa.field("scorer_version", pa.string()),
    pa.field("params_sha256", pa.string()),
    pa.field("seconds", pa.float64()),
    pa.field("error", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("scored_at", TS),
])
# 0.2's latest_scores view, verbatim: what its catalog showed
OLD_LATEST_SCORES = """
SELECT image_id,
       arg_max(niqe, latest) FILTER (WHERE niqe IS NOT NULL) AS niqe,
       arg_max(brisque, latest) FILTER (WHERE brisque IS NOT NULL) AS brisque
FROM (SELECT image_id, niqe, brisque, (coalesce(scored_at, TIMESTAMPTZ '-infinity'), coalesce(run_id, '')) AS latest
      FROM read_parquet(?) WHERE error IS NULL)
GROUP BY image_id
"""
COMPARED = ("image_id", "metric", "value", "version", "params_sha256", "fingerprint", "error", "retryable", "run_id")


def _add_images(store: Store, images: dict[str, bytes]) -> None:
    files = store.root / "files"
    files.mkdir(parents=True, exist_ok=True)
    for image_id, data in images.items():
        (files / f"{image_id}.png").write_bytes(data)
    store.append("images", pa.Table.from_pylist([{"image_id": i, "source": "t"} for i in images]))
    store.append("downloads", pa.Table.from_pylist([{"image_id": i, "status": "ok", "path": f"files/{i}.png",
                                                     "attempt": 1} for i in images]))


def _png(img) -> bytes:  # noqa: ANN001 - an RGB array
    ok, buf = cv2.imencode(".png", img[:, :, ::-1])
    assert ok
    return buf.tobytes()


def _to_old_layout(rows: list[dict], order: tuple[str, ...]) -> dict[str, list[dict]]:
    """The long rows of each run as 0.2 wrote them: one wide row per image, an error blanking the whole row."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["run_id"], r["image_id"]), []).append(r)
    out: dict[str, list[dict]] = {}
    for (run_id, image_id), group in sorted(groups.items()):
        group.sort(key=lambda r: order.index(r["metric"]))
        error = next((r["error"] for r in group if r["error"]), None)
        wide = {"image_id": image_id, "metrics": ",".join(r["metric"] for r in group),
                "scorer_version": ",".join(r["version"] for r in group),
                "params_sha256": ",".join(f"{r['metric']}:{r['params_sha256']}" for r in group),
                "seconds": sum(r["seconds"] for r in group), "error": error, "run_id": run_id,
                "scored_at": max(r["scored_at"] for r in group)}
        if error is None:
            wide.update({r["metric"]: r["value"] for r in group})
        out.setdefault(run_id, []).append(wide)
    return out


def _catalog(store: Store) -> dict[str, tuple]:
    rows = store.query("SELECT image_id, niqe, brisque FROM catalog ORDER BY image_id").to_pylist()
    return {r["image_id"]: (r["niqe"], r["brisque"]) for r in rows}


def _long(store: Store) -> list[tuple]:
    cols = ", ".join(COMPARED)
    return [tuple(r.values()) for r in store.query(f"SELECT {cols} FROM scores ORDER BY {cols}").to_pylist()]


def _migrate(store: Store) -> str:
    res = CliRunner().invoke(app, ["migrate", "--manifest", str(store.root)])
    assert res.exit_code == 0, res.output
    return res.stdout


def test_a_02_store_is_refused_then_migrated_and_resumes_exactly(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    astro = skimage.data.astronaut()
    # a real 0.2-like history: NIQE alone, then NIQE+BRISQUE (only BRISQUE due for the first images);
    # tiny is too small for NIQE (an error) but not for BRISQUE; broken files fail every metric
    _add_images(store, {"a": _png(astro[:192, :192]), "b": _png(skimage.data.chelsea()[:200, :224]),
                        "tiny": _png(astro[:40, :60]), "broken": b"\x89PNG\r\n\x1a\nnot really"})
    run_score(store, ScoreConfig(metrics=("niqe",)), QUIET)
    _add_images(store, {"c": _png(skimage.data.coffee()[:208, :256]), "broken2": b"GIF89a...."})
    run_score(store, BOTH, QUIET)
    before_catalog, before_rows = _catalog(store), _long(store)
    long_rows = store.query("SELECT * FROM scores").to_pylist()
    errors = {(r["image_id"], r["metric"]) for r in long_rows if r["error"]}
    assert errors == {("tiny", "niqe"), ("broken", "niqe"), ("broken", "brisque"), ("broken2", "niqe"),
                      ("broken2", "brisque")}
    assert before_catalog["tiny"][0] is None and before_catalog["tiny"][1] is not None

    # write those rows back in the 0.2 layout, one part per run, as 0.2 did
    for part in store.parts("scores"):
        part.unlink()
    wide = _to_old_layout(long_rows, BOTH.metrics)
    assert [len(v) for v in wide.values()] == [4, 6]
    assert {r["metrics"] for r in wide[max(wide)]} == {"brisque", "niqe,brisque"}
    for run_id, rows in wide.items():
        pq.write_table(pa.Table.from_pylist(rows, schema=OLD_SCORES), store.root / "scores" / f"part-{run_id}-0.parquet")
    old_parts = sorted(store.parts("scores"))
    with duckdb.connect(":memory:") as con:
        shown = con.sql(OLD_LATEST_SCORES, params=[[str(p) for p in old_parts]]).to_arrow_table().to_pylist()
    old_catalog = {i: (None, None) for i in before_catalog} | {r["image_id"]: (r["niqe"], r["brisque"]) for r in shown}
    assert old_catalog == before_catalog

    # the 0.2 parts are refused with one line naming the fix
    with pytest.raises(StoreError, match=r"million-ird migrate --manifest") as refused:
        Store(store.root).connect()
    assert "\n" not in str(refused.value) and "0.2" in str(refused.value)

    out = _migrate(store)
    assert "nothing to do" not in out
    assert ["scores", "2", "10", str(len(before_rows))] in [line.split() for line in out.splitlines()], out
    assert all("metric" in pq.read_schema(p).names for p in store.parts("scores"))
    assert not any(p.exists() for p in old_parts)
    assert not (store.root / "scores" / JOURNAL).exists()
    assert not [p for p in store.root.rglob(f"{TMP_PREFIX}*")]

    # the catalog shows what 0.2's did; every long row is back, error rows one per metric, final
    assert _catalog(store) == old_catalog
    assert _long(store) == before_rows
    migrated = store.query("SELECT * FROM scores").to_pylist()
    assert {(r["image_id"], r["metric"]) for r in migrated if r["error"]} == errors
    assert all(r["retryable"] is False and r["value"] is None for r in migrated if r["error"])
    old_rows = {(r["run_id"], r["image_id"]): r for rows in wide.values() for r in rows}
    for r in migrated:
        assert r["fingerprint"] == metric_fingerprint(iqa.get(r["metric"]))
        was = old_rows[r["run_id"], r["image_id"]]
        assert (r["seconds"], r["scored_at"]) == (was["seconds"], was["scored_at"])

    # the same metrics again: nothing pending, nothing written; migrate again: nothing to do
    parts = store.parts("scores")
    stats = run_score(store, BOTH, QUIET)
    assert stats["pending"] == 0 and stats["rows"] == 0 and store.parts("scores") == parts
    assert "nothing to do: the store is already in the current layout" in _migrate(store)
    assert store.parts("scores") == parts
    # the migrated error rows are errors like any other: --retry-errors redoes exactly them
    retry = run_score(store, BOTH, DriverConfig(progress=False, retry_errors=True))
    assert retry["pending"] == 3 and retry["rows"] == 5 and retry["errors"] == 5


@pytest.mark.parametrize("args", [["score"], ["patches"], ["stats"], ["query", "SELECT count(*) FROM images"],
                                  ["filter"], ["download"]])
def test_commands_on_a_02_store_stop_with_the_one_line_migrate_error(tmp_path: Path, args: list[str]) -> None:
    store = Store(tmp_path / "store")
    _add_images(store, {"a": _png(skimage.data.astronaut()[:128, :128])})
    (store.root / "scores").mkdir()
    pq.write_table(pa.Table.from_pylist([{"image_id": "a", "niqe": 3.0, "metrics": "niqe"}], schema=OLD_SCORES),
                   store.root / "scores" / "part-0.parquet")
    res = CliRunner().invoke(app, [args[0], "--manifest", str(store.root), *args[1:]])
    assert res.exit_code == 2, (f"`million-ird {args[0]}` on a 0.2 store should stop (exit 2) with the one-line "
                                f"`million-ird migrate` error; got exit {res.exit_code} and {res.exception!r}")
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "million-ird migrate --manifest" in lines[0]
