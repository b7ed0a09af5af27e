"""`catalog` shows the latest score per metric; score/patches say which step to run when they have no input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
from curation_helpers import encode
from typer.testing import CliRunner

from million_ird import iqa
from million_ird.cli import app
from million_ird.driver import DriverConfig
from million_ird.schema import SCORES
from million_ird.stages.score import ScoreConfig, metric_fingerprint, run_score
from million_ird.store import Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
DOWNLOAD = "million-ird download --manifest"


def _score_rows(store: Store, *groups: list[dict]) -> None:
    """Append each long row as its own part file (so file order says nothing about which row is newer)."""
    for row in (r for group in groups for r in group):
        store.append("scores", pa.Table.from_pylist([row], schema=SCORES), run_id=row.get("run_id"))


def _row(image_id: str, run_id: str, hours: float | None, metrics: str, error: str | None = None,
         **values: float) -> list[dict]:
    """One long row per metric of the comma list `metrics` (each an error row when `error` is given)."""
    at = None if hours is None else T0 + timedelta(hours=hours)
    return [{"image_id": image_id, "metric": m, "value": values.get(m), "fingerprint": _fingerprint(m),
             "error": error, "retryable": None if error is None else False, "run_id": run_id, "scored_at": at}
            for m in metrics.split(",")]


def _fingerprint(metric: str) -> str:
    """The metric's real fingerprint (NIMA's needs weights this test does not have: a stand-in)."""
    return "nima-without-weights" if metric == "nima" else metric_fingerprint(iqa.get(metric))


def _catalog(store: Store) -> dict[str, tuple]:
    rows = store.query("SELECT image_id, niqe, brisque, nima FROM catalog ORDER BY image_id").to_pylist()
    return {r["image_id"]: (r["niqe"], r["brisque"], r["nima"]) for r in rows}


def test_catalog_shows_the_latest_value_of_each_metric(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    ids = ["a", "b", "c", "d", "e"]
    store.append("images", pa.Table.from_pylist([{"image_id": i, "source": "t"} for i in ids]))
    _score_rows(
        store,
        # a: NIQE+BRISQUE, then a NIQE-only rescore that is *lower*, then NIMA only, then an error row
        _row("a", "r3", 3, "nima", nima=5.5),
        _row("a", "r2", 2, "niqe", niqe=4.0),
        _row("a", "r1", 1, "niqe,brisque", niqe=6.0, brisque=30.0),
        _row("a", "r4", 4, "niqe,brisque", error="ValueError: boom"),
        # b: the same metrics twice; the later, lower values win
        _row("b", "r2", 2, "niqe,brisque", niqe=3.0, brisque=20.0),
        _row("b", "r1", 1, "niqe,brisque", niqe=7.0, brisque=40.0),
        # c: a tie on scored_at is broken by run_id
        _row("c", "r2", 1, "niqe,brisque", niqe=2.0, brisque=10.0),
        _row("c", "r1", 1, "niqe", niqe=5.0),
        # d: a row without scored_at counts as the oldest
        _row("d", "r9", None, "niqe", niqe=1.0),
        _row("d", "r1", 1, "niqe,brisque", niqe=8.0, brisque=50.0),
        # e: only an error row
        _row("e", "r1", 1, "niqe,brisque", error="ValueError: too small"),
    )
    assert _catalog(store) == {"a": (4.0, 30.0, 5.5), "b": (3.0, 20.0, None), "c": (2.0, 10.0, None),
                               "d": (8.0, 50.0, None), "e": (None, None, None)}
    assert store.query("SELECT count(*) FROM latest_scores").column(0)[0].as_py() == 4  # e has no value


def test_catalog_follows_a_real_run_then_a_later_lower_rescore(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    (tmp_path / "img.png").write_bytes(encode("PNG", 160, 128, seed=4))
    store.append("images", pa.Table.from_pylist([{"image_id": "x", "source": "t", "path": str(tmp_path / "img.png")}]))
    store.append("downloads", pa.Table.from_pylist([{"image_id": "x", "status": "ok", "path": str(tmp_path / "img.png"),
                                                      "width": 160, "height": 128, "attempt": 1}]))
    run_score(store, ScoreConfig(metrics=("niqe", "brisque")), DriverConfig(progress=False))
    (niqe, brisque, _), = _catalog(store).values()
    later = store.query("SELECT max(scored_at) FROM scores").column(0)[0].as_py() + timedelta(seconds=1)
    _score_rows(store, [r | {"scored_at": later} for r in _row("x", "z-rescore", None, "niqe", niqe=niqe - 1.0)])
    assert _catalog(store)["x"] == (niqe - 1.0, brisque, None)
    assert store.query("SELECT metric, value FROM latest_score_values ORDER BY metric").to_pylist() == [
        {"metric": "brisque", "value": brisque}, {"metric": "niqe", "value": niqe - 1.0}]


def _invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_score_and_patches_name_the_missing_download_step(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        (photos / f"p{i}.png").write_bytes(encode("PNG", 160, 128, seed=i))
    store = str(tmp_path / "store")
    assert _invoke("ingest", "-m", store, "--folder", str(photos))[0] == 0
    for command in ("score", "patches"):
        code, out, err = _invoke(command, "-m", store)
        assert code == 2, (command, out, err)
        assert f"{DOWNLOAD} {store}" in err and "verifies local folders in place" in err, err
        assert len(err.strip().splitlines()) == 1
    assert _invoke("score", "-m", store, "--metrics", "nique")[0] == 2  # a bad flag is still reported first

    assert _invoke("download", "-m", store)[0] == 0
    code, out, _ = _invoke("score", "-m", store)
    assert code == 0 and "nothing to do" not in out and DOWNLOAD not in out
    code, out, _ = _invoke("score", "-m", store)
    assert code == 0 and "nothing to do: every image is already scored" in out
    code, out, _ = _invoke("patches", "-m", store, "--size", "64")
    assert code == 0 and "nothing to do" not in out
    code, out, _ = _invoke("patches", "-m", store, "--size", "64")
    assert code == 0 and "nothing to do: every image is already cut" in out
    code, out, _ = _invoke("patches", "-m", store, "--size", "4096")
    assert code == 0 and "no downloaded image is at least 4096 px" in out

    more = tmp_path / "more"
    more.mkdir()
    (more / "q.png").write_bytes(encode("PNG", 160, 128, seed=7))
    assert _invoke("ingest", "-m", store, "--folder", str(more))[0] == 0
    code, out, _ = _invoke("score", "-m", store)
    assert code == 0 and "nothing to do: every downloaded image is already scored" in out
    assert "1 of 3 images have no download outcome yet" in out and f"{DOWNLOAD} {store}" in out


def test_failed_downloads_and_an_empty_store_are_explained(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.root.mkdir()
    code, _, err = _invoke("score", "-m", str(store.root))
    assert code == 2 and "no images yet" in err and "million-ird ingest --manifest" in err
    store.append("images", pa.Table.from_pylist([{"image_id": i, "source": "web", "url": f"http://h/{i}"}
                                                 for i in ("a", "b")]))
    store.append("downloads", pa.Table.from_pylist([{"image_id": "a", "status": "failed", "error": "HTTP 404",
                                                     "attempt": 1}]))
    for command in ("score", "patches"):
        code, _, err = _invoke(command, "-m", str(store.root))
        assert code == 2 and "no image has an ok download outcome (1 failed, 1 not tried yet)" in err, err
        assert f"{DOWNLOAD} {store.root}" in err
