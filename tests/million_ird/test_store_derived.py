"""Derived files (million_ird.derived) change no view's rows and are never stale; a broken one is not used."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from million_ird import derived
from million_ird.lock import lock_path, store_lock
from million_ird.schema import DOWNLOADS, DUPLICATES, IMAGES, SCORES
from million_ird.stats import store_stats
from million_ird.store import Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
VIEWS = ("catalog", "catalog_base", "latest_scores", "latest_score_values", "latest_downloads")


def _download(image_id: str, status: str, attempt: int, hours: float | None, **extra: object) -> dict:
    at = None if hours is None else T0 + timedelta(hours=hours)
    return {"image_id": image_id, "status": status, "attempt": attempt, "finished_at": at, **extra}


def _score(image_id: str, metric: str, value: float | None, fingerprint: str, run: str, hours: float | None,
           error: str | None = None) -> dict:
    at = None if hours is None else T0 + timedelta(hours=hours)
    return {"image_id": image_id, "metric": metric, "value": value, "fingerprint": fingerprint, "run_id": run,
            "scored_at": at, "error": error, "retryable": None if error is None else False}


def _record(store: Store, command: str, run: str, fingerprints: dict[str, str] | None = None) -> None:
    """A run record as the driver writes it (the latest one of `score` says which fingerprints are in force)."""
    folder = store.root / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run}.json").write_text(json.dumps({"config": {"fingerprints": fingerprints or {}}}))


def make_store(root: Path) -> Store:
    """Every case the latest_* views decide: retries, ok-wins, missing times, errors, fingerprints, dedup."""
    store = Store(root)
    store.append("images", pa.Table.from_pylist(
        [{"image_id": i, "source": "web" if i < "d" else "local", "url": f"https://x.example/{i}.jpg",
          "width": 2000, "height": 1500} for i in "abcdef"] + [{"image_id": "g", "source": "local", "path": "/d/g.png"}],
        schema=IMAGES))
    store.append("downloads", pa.Table.from_pylist([
        _download("a", "failed", 1, 1, error="HTTP 500"), _download("a", "ok", 2, 2, path="files/a.jpg", width=2000,
                                                                       height=1500, bytes=10, sha256="aa"),
        _download("b", "ok", 1, 1, path="files/b.jpg", width=1000, height=900, bytes=5),
        _download("b", "failed", 2, 3, error="HTTP 404"),  # a later failure never hides an ok outcome
        _download("c", "failed", 1, 1, error="timeout"), _download("c", "failed", 2, None, error="HTTP 403"),
        _download("e", "ok", 1, None, width=3000, height=2000), _download("g", "ok", 1, 1),
        _download("zz-not-an-image", "ok", 1, 1, path="files/zz.jpg"),
    ], schema=DOWNLOADS))
    store.append("scores", pa.Table.from_pylist([
        _score("a", "niqe", 4.0, "fp-old", "r1", 1), _score("a", "niqe", 6.0, "fp-new", "r2", 2),
        _score("a", "brisque", 30.0, "bq", "r1", 1), _score("a", "niqe", None, "fp-new", "r3", 3, error="boom"),
        _score("b", "niqe", 3.0, "fp-old", "r1", None), _score("b", "mean_luma", 0.5, "ml", "r1", 1),
        _score("e", "brisque", None, "bq", "r1", 1, error="too small"),
    ], schema=SCORES))
    store.append("duplicates", pa.Table.from_pylist([
        {"image_id": "a", "group_id": "a", "kept": True, "reason": "near", "fingerprint": "d", "run_id": "x-dedup-1"},
        {"image_id": "b", "group_id": "a", "kept": False, "reason": "near", "fingerprint": "d", "run_id": "x-dedup-1"},
    ], schema=DUPLICATES))
    _record(store, "score", "20240501T000000Z-score-aaaaaa", {"niqe": "fp-new", "brisque": "bq"})
    _record(store, "dedup", "x-dedup-1")
    return store


def rows(store: Store, view: str) -> list[dict]:
    """Every row of `view`, sorted, through `Store.query` (which builds the derived files it reads)."""
    return store.query(f"SELECT * FROM {view} ORDER BY ALL").to_pylist()


@contextmanager
def plain_views() -> Iterator[None]:
    """Read through the plain SQL views only (no derived file is found or built)."""
    saved = derived.DERIVED_DIR, derived.MIN_BYTES
    derived.DERIVED_DIR, derived.MIN_BYTES = ".no-derived-files", 1 << 62
    try:
        yield
    finally:
        derived.DERIVED_DIR, derived.MIN_BYTES = saved


@pytest.fixture
def always_derive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build derived files however small the store is."""
    monkeypatch.setattr(derived, "MIN_BYTES", 0)


def _derived_files(store: Store) -> list[str]:
    return sorted(p.name for p in (store.root / derived.DERIVED_DIR).glob("*.parquet"))


def test_views_read_the_same_rows_from_derived_files(tmp_path: Path, always_derive: None) -> None:
    store = make_store(tmp_path / "s")
    with plain_views():
        expected = {view: rows(store, view) for view in VIEWS}
        expected_stats = store_stats(store)
    assert not (store.root / derived.DERIVED_DIR).exists()
    got = {view: rows(store, view) for view in VIEWS}
    assert [f.split("-")[0] for f in _derived_files(store)] == ["catalog_base", "latest_scores"]
    assert got == expected
    assert store_stats(store) == expected_stats
    catalog = {r["image_id"]: r for r in got["catalog"]}
    assert (catalog["a"]["niqe"], catalog["a"]["status"], catalog["b"]["duplicate_dropped"]) == (6.0, "ok", True)
    assert (catalog["b"]["status"], catalog["c"]["error"], catalog["g"]["path"]) == ("ok", "HTTP 403", "/d/g.png")
    assert "zz-not-an-image" not in catalog and catalog["d"]["status"] is None


def test_derived_files_are_never_stale(tmp_path: Path, always_derive: None) -> None:
    """A new part, or a new config in force with no new part, gives a new key; old files go after the grace."""
    store = make_store(tmp_path / "s")
    rows(store, "catalog")
    rows(store, "latest_scores")
    first = _derived_files(store)
    store.append("downloads", pa.Table.from_pylist([_download("d", "ok", 1, 5, path="files/d.jpg", width=800,
                                                              height=600)], schema=DOWNLOADS))
    store.append("scores", pa.Table.from_pylist([_score("d", "niqe", 2.5, "fp-new", "r4", 5)], schema=SCORES))
    with plain_views():
        expected = {view: rows(store, view) for view in VIEWS}
    assert {view: rows(store, view) for view in VIEWS} == expected
    assert next(r for r in expected["catalog"] if r["image_id"] == "d")["niqe"] == 2.5
    _record(store, "score", "20240601T000000Z-score-bbbbbb", {"niqe": "fp-old"})  # fp-old is in force again
    with plain_views():
        old_in_force = rows(store, "latest_scores")
    assert rows(store, "latest_scores") == old_in_force
    assert next(r for r in old_in_force if r["image_id"] == "a")["niqe"] == 4.0
    assert len(_derived_files(store)) == 5 and set(first) <= set(_derived_files(store))  # within the grace
    past = time.time() - 2 * derived.GRACE_S
    for name in first:
        os.utime(store.root / derived.DERIVED_DIR / name, (past, past))
    assert derived.prune(store.root, "catalog_base") == 1 and derived.prune(store.root, "latest_scores") == 1
    assert not set(first) & set(_derived_files(store))


def test_a_broken_or_unwritable_derived_file_falls_back_to_the_plain_view(
        tmp_path: Path, always_derive: None, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(tmp_path / "s")
    with plain_views():
        expected = rows(store, "catalog")
    rows(store, "catalog")
    for name in _derived_files(store):
        (store.root / derived.DERIVED_DIR / name).write_bytes(b"not parquet")  # e.g. a torn copy
    assert rows(store, "catalog") == expected and _derived_files(store) == []  # not used, removed
    assert rows(store, "catalog") == expected and _derived_files(store)[0].startswith("catalog_base-")  # rebuilt
    (store.root / derived.DERIVED_DIR / _derived_files(store)[0]).unlink()

    def vanished(*args: object) -> None:  # a writer's clean_temp removed the builder's temp file
        raise FileNotFoundError("temp file gone")

    monkeypatch.setattr(derived, "_build", vanished)
    assert rows(store, "catalog") == expected and _derived_files(store) == []


def test_temp_files_of_a_killed_builder_are_cleaned_under_the_lock(tmp_path: Path, always_derive: None) -> None:
    store = make_store(tmp_path / "s")
    rows(store, "catalog")
    dead = store.root / derived.DERIVED_DIR / ".tmp-0123-catalog_base-x.parquet"
    dead.write_bytes(b"half")
    with store_lock(store.root):
        assert store.clean_temp() == 1
    assert not dead.exists() and len(_derived_files(store)) == 1


def test_small_stores_get_no_derived_file(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    rows(store, "catalog")
    store_stats(store)
    assert not (store.root / derived.DERIVED_DIR).exists()


def test_no_derived_file_is_built_while_another_process_writes(tmp_path: Path, always_derive: None) -> None:
    """A writer elsewhere (its flock, on another open file of .lock) would make it stale at once; the lock
    holder itself may build one."""
    store = make_store(tmp_path / "s")
    with plain_views():
        expected = rows(store, "catalog")
    fd = os.open(lock_path(store.root), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another process's store_lock holds it
        assert derived.writer_elsewhere(store.root)
        assert rows(store, "catalog") == expected and _derived_files(store) == []
    finally:
        os.close(fd)
    with store_lock(store.root):
        assert not derived.writer_elsewhere(store.root)
        assert rows(store, "catalog") == expected and len(_derived_files(store)) == 1
