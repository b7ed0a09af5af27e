"""`score` is done per metric only at the same version and parameter file: a NIQE refit rescores NIQE alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import skimage.data
from curation_helpers import cli

from million_ird import iqa
from million_ird.driver import DriverConfig
from million_ird.images import read_image as load_image
from million_ird.schema import SCORES
from million_ird.stage import fingerprint_of
from million_ird.stages.score import ScoreConfig, metric_fingerprint, run_score
from million_ird.store import Store, utc_now

NIQE_LIVE = iqa.get("niqe")
BRISQUE = iqa.get("brisque")
QUIET = DriverConfig(progress=False)


def _photos(folder: Path) -> dict[str, Path]:
    """Three scorable photos and one too small for NIQE (a NIQE error row; BRISQUE still scores it)."""
    folder.mkdir(parents=True)
    crops = {"astro": skimage.data.astronaut()[:256, :288], "chelsea": skimage.data.chelsea()[:, :320],
             "coffee": skimage.data.coffee()[100:356, :384], "tiny": skimage.data.astronaut()[:40, :60]}
    out = {}
    for name, img in crops.items():
        out[name] = folder / f"{name}.png"
        cv2.imwrite(str(out[name]), img[:, :, ::-1])
    return out


def _refit(tmp_path: Path) -> Path:
    """A NIQE pristine model fitted by `million-ird iqa fit-niqe` on other images than the store's."""
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for name in ("rocket", "camera", "coins", "immunohistochemistry"):
        img = getattr(skimage.data, name)()
        cv2.imwrite(str(pristine / f"{name}.png"), img[:, :, ::-1] if img.ndim == 3 else img)
    out = tmp_path / "refit.npz"
    cli("iqa", "fit-niqe", "--pristine", str(pristine), "--out", str(out), "--sharpness", "0")
    return out


def _names(store: Store) -> dict[str, str]:
    """image_id -> file stem (folder ingest derives ids from the files)."""
    return {r["image_id"]: Path(r["path"]).stem for r in store.query("SELECT image_id, path FROM catalog").to_pylist()}


def _rows(store: Store) -> list[dict]:
    """Every scores row, with `name` (the file stem, or the id for hand-built stores) added."""
    names = _names(store)
    rows = store.query("SELECT * FROM scores ORDER BY scored_at, image_id").to_pylist()
    return [r | {"name": names.get(r["image_id"], r["image_id"])} for r in rows]


def _catalog(store: Store) -> dict[str, tuple]:
    names = _names(store)
    rows = store.query("SELECT image_id, niqe, brisque FROM catalog").to_pylist()
    return {names[r["image_id"]]: (r["niqe"], r["brisque"]) for r in rows}


def _last_run(store: Store) -> dict:
    records = [json.loads(p.read_text()) for p in (store.root / "runs").glob("*-score-*.json")]
    return max(records, key=lambda rec: rec["finished_at"])["stats"]


def test_a_niqe_refit_rescores_niqe_only_and_each_config_runs_once(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    store = Store(tmp_path / "store")
    manifest = str(store.root)
    cli("ingest", "-m", manifest, "--folder", str(tmp_path / "photos"))
    cli("download", "-m", manifest)

    # (1) the default config twice: the second run writes nothing
    cli("score", "-m", manifest)
    first = _rows(store)
    assert sorted((r["name"], r["metric"]) for r in first) == [
        (n, m) for n in ("astro", "chelsea", "coffee", "tiny") for m in ("brisque", "niqe")]
    # errors are per metric: tiny is too small for NIQE, BRISQUE still gives it a value
    assert [(r["name"], r["metric"]) for r in first if r["error"]] == [("tiny", "niqe")]
    assert all(r["value"] is not None for r in first if not r["error"])
    assert _last_run(store)["errors"] == 1
    parts = store.parts("scores")
    again = cli("score", "-m", manifest)
    assert "nothing to do" in again.stdout and store.parts("scores") == parts
    live = _catalog(store)
    assert live["tiny"][0] is None and live["tiny"][1] is not None

    # (2) a refitted NIQE model: one NIQE-only row per image, with the new fingerprint; BRISQUE is not redone
    refit = _refit(tmp_path)
    sha = hashlib.sha256(refit.read_bytes()).hexdigest()
    out = cli("score", "-m", manifest, "--niqe-params", str(refit))
    assert "nothing to do" not in out.stdout, out.stdout
    new = [r for r in _rows(store) if r["run_id"] not in {f["run_id"] for f in first}]
    # tiny's NIQE error belongs to the LIVE model's fingerprint: the refit is another unit of work, so tiny
    # is tried once under it too (and fails the same way); its BRISQUE value is not touched
    assert sorted((r["name"], r["metric"]) for r in new) == [(n, "niqe") for n in ("astro", "chelsea", "coffee", "tiny")]
    stats = _last_run(store)
    assert stats["pending"] == 4 and stats["rows"] == 4 and stats["errors"] == 1
    assert stats["per_metric"].startswith("niqe:4 median ") and "brisque" not in stats["per_metric"]
    model = iqa.get("niqe", iqa.MetricOptions(niqe_params=str(refit)))
    assert model.params_sha256 == sha != NIQE_LIVE.params_sha256
    assert metric_fingerprint(model) != metric_fingerprint(NIQE_LIVE)
    cat = _catalog(store)
    for r in new:
        assert r["metric"] == "niqe" and r["params_sha256"] == sha and r["version"] == NIQE_LIVE.full_version
        assert r["fingerprint"] == metric_fingerprint(model)
        if r["name"] == "tiny":
            assert r["value"] is None and "NIQE" in r["error"] and r["retryable"] is False
            continue
        assert r["error"] is None and r["value"] == model.score(load_image(photos[r["name"]]))
        assert r["value"] != live[r["name"]][0]
        assert cat[r["name"]] == (r["value"], live[r["name"]][1])  # new NIQE, BRISQUE kept
    assert cat["tiny"] == (None, live["tiny"][1])

    # (3) the refit again: nothing to do (tiny's error under the refit is final)
    parts = store.parts("scores")
    again = cli("score", "-m", manifest, "--niqe-params", str(refit))
    assert "nothing to do" in again.stdout and store.parts("scores") == parts


def _one_image_store(root: Path, ids: list[str]) -> Store:
    store = Store(root)
    files = root / "files"
    files.mkdir(parents=True)
    img = skimage.data.astronaut()[:192, :192, ::-1]
    for i, image_id in enumerate(ids):
        cv2.imwrite(str(files / f"{image_id}.png"), np.roll(img, 17 * i, axis=1))
    store.append("images", pa.Table.from_pylist([{"image_id": i, "source": "t"} for i in ids]))
    store.append("downloads", pa.Table.from_pylist([{"image_id": i, "status": "ok", "path": f"files/{i}.png",
                                                     "attempt": 1} for i in ids]))
    return store


def _run_rows(store: Store, stats: dict) -> set[tuple[str, str]]:
    """(image_id, metric) of every row the run `stats` describes wrote."""
    return {(r["image_id"], r["metric"]) for r in _rows(store) if r["run_id"] == stats["run_id"]}


def test_only_the_due_metrics_are_computed_per_image(tmp_path: Path) -> None:
    store = _one_image_store(tmp_path / "s", ["a", "b"])
    run_score(store, ScoreConfig(metrics=("niqe",)), QUIET)
    stats = run_score(store, ScoreConfig(metrics=("niqe", "brisque")), QUIET)
    assert stats["pending"] == 2 and stats["rows"] == 2 and stats["errors"] == 0
    assert stats["per_metric"].startswith("brisque:2 median ") and "niqe" not in stats["per_metric"]
    assert _run_rows(store, stats) == {("a", "brisque"), ("b", "brisque")}
    # a new image gets both metrics; a later row of another NIQE version does not undo a's done NIQE
    _append_image(store, "c")
    other = NIQE_LIVE.full_version + "-x"
    store.append("scores", pa.Table.from_pylist(
        [{"image_id": "a", "metric": "niqe", "value": 1.0, "version": other, "params_sha256": NIQE_LIVE.params_sha256,
          "fingerprint": fingerprint_of("niqe", other, NIQE_LIVE.params_sha256), "scored_at": utc_now()}],
        schema=SCORES))
    stats = run_score(store, ScoreConfig(metrics=("niqe", "brisque")), QUIET)
    assert stats["pending"] == 1 and stats["rows"] == 2
    assert "brisque:1 median " in stats["per_metric"] and "niqe:1 median " in stats["per_metric"]
    assert _run_rows(store, stats) == {("c", "niqe"), ("c", "brisque")}


def _append_image(store: Store, image_id: str) -> None:
    img = skimage.data.chelsea()[:200, :200, ::-1]
    cv2.imwrite(str(store.root / "files" / f"{image_id}.png"), img)
    store.append("images", pa.Table.from_pylist([{"image_id": image_id, "source": "t"}]))
    store.append("downloads", pa.Table.from_pylist([{"image_id": image_id, "status": "ok",
                                                     "path": f"files/{image_id}.png", "attempt": 1}]))


def test_rows_of_another_version_or_without_fingerprint_do_not_count(tmp_path: Path) -> None:
    store = _one_image_store(tmp_path / "s", ["a", "b", "c"])
    live = NIQE_LIVE.params_sha256
    older = "million_ird-0.0.1/niqe-live-0"

    def niqe_row(image_id: str, version: str | None, sha: str | None) -> dict:
        return {"image_id": image_id, "metric": "niqe", "value": 3.0, "version": version, "params_sha256": sha,
                "fingerprint": fingerprint_of("niqe", version, sha or "")}

    store.append("scores", pa.Table.from_pylist([
        niqe_row("a", older, live),  # an older implementation version
        niqe_row("b", None, None),  # no version or parameter hash at all (a migrated 0.2 row without them)
        niqe_row("c", NIQE_LIVE.full_version, live),  # the current config: done
        {"image_id": "c", "metric": "brisque", "value": 20.0, "version": BRISQUE.full_version,
         "params_sha256": BRISQUE.params_sha256, "fingerprint": metric_fingerprint(BRISQUE)},
    ], schema=SCORES))
    assert niqe_row("c", NIQE_LIVE.full_version, live)["fingerprint"] == metric_fingerprint(NIQE_LIVE)
    stats = run_score(store, ScoreConfig(metrics=("niqe",)), QUIET)
    assert stats["pending"] == 2 and stats["rows"] == 2 and stats["per_metric"].startswith("niqe:2 median ")
    assert sorted(_run_rows(store, stats)) == [("a", "niqe"), ("b", "niqe")]
    assert run_score(store, ScoreConfig(metrics=("niqe",)), QUIET)["pending"] == 0
