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
from million_ird.images import read_image as load_image
from million_ird.stages.score import ScoreConfig, run_score
from million_ird.store import Store

NIQE_LIVE = iqa.get("niqe")


def _photos(folder: Path) -> dict[str, Path]:
    """Three scorable photos and one too small for NIQE (an error row)."""
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
    assert sorted(r["name"] for r in first) == ["astro", "chelsea", "coffee", "tiny"]
    assert [r["name"] for r in first if r["error"]] == ["tiny"]
    parts = store.parts("scores")
    again = cli("score", "-m", manifest)
    assert "nothing to do" in again.stdout and store.parts("scores") == parts
    live = _catalog(store)

    # (2) a refitted NIQE model: one NIQE-only row per scorable image, with the new fingerprint
    refit = _refit(tmp_path)
    sha = hashlib.sha256(refit.read_bytes()).hexdigest()
    out = cli("score", "-m", manifest, "--niqe-params", str(refit))
    assert "nothing to do" not in out.stdout, out.stdout
    new = [r for r in _rows(store) if r["run_id"] not in {f["run_id"] for f in first}]
    assert sorted(r["name"] for r in new) == ["astro", "chelsea", "coffee"]  # tiny's error is not retried
    assert _last_run(store)["due"] == "niqe:3,brisque:0"
    model = iqa.get("niqe", iqa.MetricOptions(niqe_params=str(refit)))
    assert model.params_sha256 == sha != NIQE_LIVE.params_sha256
    cat = _catalog(store)
    for r in new:
        assert r["error"] is None and r["metrics"] == "niqe" and r["brisque"] is None and r["nima"] is None
        assert r["params_sha256"] == f"niqe:{sha}" and r["scorer_version"] == NIQE_LIVE.full_version
        assert r["niqe"] == model.score(load_image(photos[r["name"]]))
        assert r["niqe"] != live[r["name"]][0]
        assert cat[r["name"]] == (r["niqe"], live[r["name"]][1])  # new NIQE, BRISQUE kept
    assert cat["tiny"] == (None, None)

    # (3) the refit again: nothing to do
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


def test_only_the_due_metrics_are_computed_per_image(tmp_path: Path) -> None:
    store = _one_image_store(tmp_path / "s", ["a", "b"])
    run_score(store, ScoreConfig(metrics=("niqe",)), progress=False)
    stats = run_score(store, ScoreConfig(metrics=("niqe", "brisque")), progress=False)
    assert stats["pending"] == 2 and stats["due"] == "niqe:0,brisque:2"
    assert {r["metrics"] for r in _rows(store) if r["run_id"] == stats["run_id"]} == {"brisque"}
    # a new image gets both metrics; a later row of another NIQE version does not undo a's done NIQE
    _append_image(store, "c")
    store.append("scores", pa.Table.from_pylist(
        [{"image_id": "a", "niqe": 1.0, "metrics": "niqe", "scorer_version": NIQE_LIVE.full_version + "-x",
          "params_sha256": f"niqe:{NIQE_LIVE.params_sha256}"}]))
    stats = run_score(store, ScoreConfig(metrics=("niqe", "brisque")), progress=False)
    assert stats["due"] == "niqe:1,brisque:1"
    got = {(r["image_id"], r["metrics"]) for r in _rows(store) if r["run_id"] == stats["run_id"]}
    assert got == {("c", "niqe,brisque")}


def _append_image(store: Store, image_id: str) -> None:
    img = skimage.data.chelsea()[:200, :200, ::-1]
    cv2.imwrite(str(store.root / "files" / f"{image_id}.png"), img)
    store.append("images", pa.Table.from_pylist([{"image_id": image_id, "source": "t"}]))
    store.append("downloads", pa.Table.from_pylist([{"image_id": image_id, "status": "ok",
                                                     "path": f"files/{image_id}.png", "attempt": 1}]))


def test_rows_of_another_version_or_without_fingerprint_do_not_count(tmp_path: Path) -> None:
    store = _one_image_store(tmp_path / "s", ["a", "b", "c"])
    live = NIQE_LIVE.params_sha256
    store.append("scores", pa.Table.from_pylist([
        {"image_id": "a", "niqe": 3.0, "metrics": "niqe", "scorer_version": "million_ird-0.0.1/niqe-live-0",
         "params_sha256": f"niqe:{live}"},  # an older implementation version
        {"image_id": "b", "niqe": 3.0, "metrics": "niqe"},  # no fingerprint at all
        {"image_id": "c", "niqe": 3.0, "metrics": "brisque,niqe",  # the version is read at niqe's place
         "scorer_version": f"{iqa.get('brisque').full_version},{NIQE_LIVE.full_version}",
         "params_sha256": f"brisque:{iqa.get('brisque').params_sha256},niqe:{live}"},
    ]))
    stats = run_score(store, ScoreConfig(metrics=("niqe",)), progress=False)
    assert stats["pending"] == 2 and stats["due"] == "niqe:2"
    assert sorted(r["image_id"] for r in _rows(store) if r["run_id"] == stats["run_id"]) == ["a", "b"]
    assert run_score(store, ScoreConfig(metrics=("niqe",)), progress=False)["pending"] == 0
