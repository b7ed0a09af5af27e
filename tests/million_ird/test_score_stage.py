"""The score stage over a small hand-built store: scores, error rows, resume, workers, CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import skimage.data
import typer
from typer.testing import CliRunner

from million_ird import iqa
from million_ird.cli.iqa import register
from million_ird.driver import DriverConfig
from million_ird.executors import ExecutorConfig
from million_ird.images import read_image as load_image
from million_ird.iqa import registry
from million_ird.stages.score import ScoreConfig, is_retryable, metric_fingerprint, run_score
from million_ird.store import Store


def make_store(root: Path) -> Store:
    """Images on disk + images/downloads rows: good PNG/JPEG/16-bit gray, a tiny one, a corrupt one, a failed one."""
    store = Store(root)
    files = root / "files"
    files.mkdir(parents=True)
    astro, chelsea = skimage.data.astronaut(), skimage.data.chelsea()
    cv2.imwrite(str(files / "astro.png"), astro[:, :, ::-1])
    cv2.imwrite(str(files / "chelsea.jpg"), chelsea[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(files / "camera16.png"), skimage.data.camera().astype(np.uint16) * 257)
    cv2.imwrite(str(files / "tiny.png"), astro[:40, :60, ::-1])
    (files / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    paths = {"astro": "files/astro.png", "chelsea": str(files / "chelsea.jpg"), "camera16": "files/camera16.png",
             "tiny": "files/tiny.png", "corrupt": "files/corrupt.jpg", "failed": None}
    store.append("images", pa.Table.from_pylist([{"image_id": k, "source": "web" if k != "camera16" else "local"}
                                                 for k in paths]))
    store.append("downloads", pa.Table.from_pylist([
        {"image_id": k, "status": "failed" if p is None else "ok", "path": p, "attempt": 1,
         "error": "HTTP 404" if p is None else None} for k, p in paths.items()]))
    return store


def scores(store: Store) -> dict[tuple[str, str], dict]:
    """Scores rows by (image id, metric), later rows replacing earlier ones."""
    rows = store.query("SELECT * FROM scores ORDER BY scored_at").to_pylist()
    return {(r["image_id"], r["metric"]): r for r in rows}


QUIET = DriverConfig(progress=False)


def test_scores_errors_and_resume(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    stats = run_score(store, ScoreConfig(), QUIET)
    # 5 ok images x 2 metrics; errors: corrupt (both metrics), tiny (NIQE only: BRISQUE still scores it)
    assert stats["pending"] == 5 and stats["rows"] == 10 and stats["errors"] == 3
    got = scores(store)
    assert {i for i, _ in got} == {"astro", "chelsea", "camera16", "tiny", "corrupt"}  # a failed download: no row
    files = {"astro": "astro.png", "chelsea": "chelsea.jpg", "camera16": "camera16.png"}
    for image_id, name in files.items():
        img = load_image(store.root / "files" / name)
        for metric in ("niqe", "brisque"):
            row = got[(image_id, metric)]
            assert row["value"] == iqa.get(metric).score(img) and row["error"] is None and row["seconds"] > 0
            assert row["fingerprint"] == metric_fingerprint(iqa.get(metric)) and row["version"]
    assert "96x96" in got[("tiny", "niqe")]["error"] and got[("tiny", "niqe")]["value"] is None
    assert got[("tiny", "brisque")]["value"] is not None  # one metric failing never drops another's value
    assert "cannot decode" in got[("corrupt", "brisque")]["error"] and got[("corrupt", "niqe")]["retryable"] is False
    parts = store.parts("scores")
    again = run_score(store, ScoreConfig(), QUIET)
    assert again["pending"] == 0 and store.parts("scores") == parts  # a re-run is a no-op
    assert run_score(store, ScoreConfig(metrics=("niqe",)), QUIET)["pending"] == 0
    retry = run_score(store, ScoreConfig(), DriverConfig(progress=False, retry_errors=True))
    assert retry["pending"] == 2 and retry["errors"] == 3
    cat = {r["image_id"]: r for r in store.query("SELECT image_id, niqe, brisque FROM catalog").to_pylist()}
    assert cat["astro"]["niqe"] == got[("astro", "niqe")]["value"] and cat["tiny"]["niqe"] is None
    assert cat["tiny"]["brisque"] == got[("tiny", "brisque")]["value"]


def test_retryable_errors_are_tried_again(tmp_path: Path) -> None:
    """A device error (CUDA out of memory) is retryable: the next run scores it again; a final error is not."""
    assert is_retryable(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_retryable(ValueError("image is 60x40")) and not is_retryable(RuntimeError("singular matrix"))
    store = make_store(tmp_path / "store")
    brisque = iqa.get("brisque")
    row = {"metric": "brisque", "version": brisque.full_version, "params_sha256": brisque.params_sha256,
           "fingerprint": metric_fingerprint(brisque), "run_id": "earlier"}
    store.append("scores", pa.Table.from_pylist([
        row | {"image_id": "astro", "error": "RuntimeError: CUDA out of memory", "retryable": True},
        row | {"image_id": "chelsea", "error": "ValueError: something final", "retryable": False}]))
    stats = run_score(store, ScoreConfig(metrics=("brisque",)), QUIET)
    assert stats["pending"] == 4  # astro (retryable), camera16, tiny, corrupt; not chelsea (a final error)
    cat = {r["image_id"]: r["brisque"] for r in store.query("SELECT image_id, brisque FROM catalog").to_pylist()}
    assert cat["astro"] is not None and cat["chelsea"] is None


def test_workers_give_the_same_scores(tmp_path: Path) -> None:
    one = make_store(tmp_path / "one")
    two = make_store(tmp_path / "two")
    run_score(one, ScoreConfig(metrics=("brisque",)), QUIET)
    run_score(two, ScoreConfig(metrics=("brisque",), images_per_task=1),
              DriverConfig(executor=ExecutorConfig(workers=2), progress=False))
    a, b = scores(one), scores(two)
    assert {k: v["value"] for k, v in a.items()} == {k: v["value"] for k, v in b.items()}


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    register(app)
    return app


def test_cli_score_says_nima_is_skipped_then_filter(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    runner = CliRunner()
    res = runner.invoke(_app(), ["score", "-m", str(store.root), "--metrics", "niqe,brisque,nima"],
                        env={"MILLION_IRD_NIMA_DIR": ""})
    assert res.exit_code == 0, res.output
    assert "nima skipped: no NIMA weights" in res.output and "96x96" in res.output
    res = runner.invoke(_app(), ["filter", "-m", str(store.root), "--min-side", "100", "--name", "cli"])
    assert res.exit_code == 0, res.output
    assert "TOTAL" in res.output and (store.root / "selections/cli/selection.json").is_file()
    res = runner.invoke(_app(), ["filter", "-m", str(store.root), "--nima", "5"])
    assert res.exit_code == 2 and "no image" in res.output
    res = runner.invoke(_app(), ["score", "-m", str(store.root), "--metrics", "nique"])
    assert res.exit_code == 2 and "valid: brisque, nima, niqe" in res.output


@pytest.mark.slow
def test_fit_niqe_cli_and_scoring_with_the_fitted_model(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "camera", "coins", "immunohistochemistry", "rocket", "cat"):
        img = getattr(skimage.data, name)()
        img = img[:, :, ::-1] if img.ndim == 3 else img
        cv2.imwrite(str(pristine / f"{name}.png"), img)
        cv2.imwrite(str(pristine / f"{name}_shift.png"), img[48:, 48:])
    out = tmp_path / "model.npz"
    res = CliRunner().invoke(_app(), ["iqa", "fit-niqe", "--pristine", str(pristine), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with np.load(out) as d:
        cov = d["cov"]
        assert d["mu"].shape == (36,) and int(d["n_images"]) == 16 and int(d["n_blocks"]) > 37
    assert np.allclose(cov, cov.T)
    m = iqa.get("niqe", iqa.MetricOptions(niqe_params=str(out)))
    clean = skimage.data.astronaut()
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    assert m.params_sha256 != iqa.get("niqe").params_sha256
    assert m.score(clean) < m.score(noisy)


def test_any_registered_metric_gets_rows_and_a_catalog_column(tmp_path: Path) -> None:
    """A metric added to the registry needs no schema edit: its rows go in the long table, catalog pivots it."""

    @iqa.register("mean_luma_test")
    class MeanLuma(iqa.Metric):
        """The mean of the gray image (a stand-in for a newly registered metric)."""

        version = "1"

        def score(self, img: np.ndarray) -> float:
            """Mean gray level."""
            return float(np.mean(img))

    store = make_store(tmp_path / "s")
    try:
        run_score(store, ScoreConfig(metrics=("mean_luma_test",)), QUIET)
    finally:
        registry._REGISTRY.pop("mean_luma_test")  # leave the registry as other tests expect it
    cat = {r["image_id"]: r for r in store.query('SELECT image_id, "mean_luma_test" FROM catalog').to_pylist()}
    assert cat["tiny"]["mean_luma_test"] > 0 and cat["failed"]["mean_luma_test"] is None
