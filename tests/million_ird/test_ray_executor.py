"""The Ray Data executor gives the local executor's rows: scores (values and errors) and patches (pixels, shards).

Also: a missing Ray or an unreachable cluster is one line (exit 2) from every per-image command, and the
score command keeps NIQE/BRISQUE off the GPUs it declares for NIMA.
"""

from __future__ import annotations

import os
import socket
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pytest
import skimage.data
from typer.testing import CliRunner

from million_ird.cli import app
from million_ird.cli.iqa import score_runs
from million_ird.driver import DriverConfig
from million_ird.executors import ExecutorConfig, ExecutorError, execute
from million_ird.images import read_image
from million_ird.stage import Stage
from million_ird.stages.patches import PatchesConfig, run_patches
from million_ird.stages.score import ScoreConfig, run_score
from million_ird.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own deprecations

LOCAL = DriverConfig(progress=False)
MISSING = r"pip install 'million-ird\[ray\]'"


def _store(root: Path, images: dict[str, np.ndarray | None]) -> Store:
    """A store of ok downloads of these BGR/gray images (None: a corrupt file), with their sizes."""
    store = Store(root)
    (root / "files").mkdir(parents=True)
    rows, outcomes = [], []
    for image_id, pixels in images.items():
        path = root / "files" / f"{image_id}.png"
        if pixels is None:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
        else:
            cv2.imwrite(str(path), pixels)
        h, w = (200, 200) if pixels is None else pixels.shape[:2]
        rows.append({"image_id": image_id, "source": "test"})
        outcomes.append({"image_id": image_id, "status": "ok", "path": f"files/{image_id}.png", "width": w,
                         "height": h, "attempt": 1})
    store.append("images", pa.Table.from_pylist(rows))
    store.append("downloads", pa.Table.from_pylist(outcomes))
    return store


def _images() -> dict[str, np.ndarray | None]:
    flat = np.full((256, 384, 3), 90, np.uint8)
    flat[:, 256:] = skimage.data.astronaut()[:256, :128, ::-1]
    return {"astro": skimage.data.astronaut()[:, :, ::-1], "camera16": skimage.data.camera().astype(np.uint16) * 257,
            "chelsea": skimage.data.chelsea()[:, :, ::-1], "corrupt": None, "flat": flat,
            "tiny": skimage.data.coffee()[:40, :60, ::-1]}


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _one_line_error(res: Any, *needles: str) -> None:
    """Exit 2 with a single `error: ...` line (no traceback) that says every needle."""
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for needle in needles:
        assert needle in lines[0], res.output


# ---- without Ray (run everywhere) ----

def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Ray importable, asking for the ray executor is an ImportError naming the extra (no Ray started)."""
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(ImportError, match=MISSING) as err:
        execute(object(), iter([]), ExecutorConfig(executor="ray"))  # type: ignore[arg-type]
    assert isinstance(err.value, ExecutorError)


@pytest.mark.parametrize("command", ["score", "patches", "splits"])
def test_cli_without_ray_is_one_line(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every per-image command says `pip install 'million-ird[ray]'` in one line, exit 2, before any work."""
    _store(tmp_path / "s", {"chelsea": skimage.data.chelsea()[:, :, ::-1]})
    monkeypatch.setitem(sys.modules, "ray", None)
    args = ["--recipe", "synthetic"] if command == "splits" else []
    res = _cli(command, "--manifest", str(tmp_path / "s"), "--executor", "ray", *args)
    _one_line_error(res, "pip install 'million-ird[ray]'")
    table = {"score": "scores", "patches": "patches", "splits": "pairs"}[command]
    assert not (tmp_path / "s" / table).exists()  # said before any work


@pytest.mark.parametrize("args, needle", [
    (["--gpus-per-worker", "1"], "--executor ray"),  # local executor: GPUs are Ray's business
    (["--executor", "ray", "--gpus-per-worker", "1"], "--device cuda"),  # NIMA would hold a GPU, run on CPU
    (["--executor", "ray", "--device", "cuda"], "--gpus-per-worker"),  # Ray hands GPUs only to declarers
    (["--executor", "ray", "--gpus-per-worker", "-1", "--device", "cuda"], ">= 0"),
])
def test_score_device_options_are_checked(args: list[str], needle: str, tmp_path: Path) -> None:
    _store(tmp_path / "s", {"chelsea": skimage.data.chelsea()[:, :, ::-1]})
    _one_line_error(_cli("score", "--manifest", str(tmp_path / "s"), *args), needle)


def test_cpu_metrics_declare_no_gpus() -> None:
    """On Ray with GPUs, NIQE/BRISQUE run apart on CPU-only workers; NIMA/pyiqa get the GPUs; no GPUs: one run."""
    run = DriverConfig(executor=ExecutorConfig(executor="ray", workers=3, gpus_per_worker=0.5))
    split = score_runs(ScoreConfig(metrics=("niqe", "nima", "brisque", "pyiqa:musiq"), device="cuda"), run)
    assert [(c.metrics, r.executor.gpus_per_worker, r.executor.workers) for c, r in split] == [
        (("niqe", "brisque"), 0.0, 3), (("nima", "pyiqa:musiq"), 0.5, 3)]
    assert [(c.metrics, r.executor.gpus_per_worker) for c, r in score_runs(ScoreConfig(), run)] == [
        (("niqe", "brisque"), 0.0)]
    cpu = DriverConfig(executor=ExecutorConfig(executor="ray", workers=2))
    assert score_runs(ScoreConfig(metrics=("niqe", "nima")), cpu) == [(ScoreConfig(metrics=("niqe", "nima")), cpu)]


def test_gpu_pool_must_fit(caplog: pytest.LogCaptureFixture) -> None:
    """workers x gpus_per_worker GPUs: refused on a local Ray that lacks them, a warning on a cluster (may scale up)."""
    from million_ird import ray_executor

    class OneGpu:
        def cluster_resources(self) -> dict[str, float]:
            return {"CPU": 8.0, "GPU": 1.0}

    ray_executor._check_gpus(OneGpu(), ExecutorConfig(executor="ray", workers=2, gpus_per_worker=0.5), True)
    ray_executor._check_gpus(OneGpu(), ExecutorConfig(executor="ray", workers=4), True)
    two = ExecutorConfig(executor="ray", workers=2, gpus_per_worker=1)
    with pytest.raises(ExecutorError, match="need 2 GPUs; Ray has 1"):
        ray_executor._check_gpus(OneGpu(), two, True)
    ray_executor._check_gpus(OneGpu(), two, False)
    assert "waits until the cluster provides them" in caplog.text


# ---- with Ray ----

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ray-address (else RAY_ADDRESS) where nothing listens: one line naming it, in seconds (ray.init retries
    for minutes); an address Ray rejects is an ExecutorError too. Nothing is started."""
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()  # runs before the module's cluster starts (file order)
    _store(tmp_path / "s", {"chelsea": skimage.data.chelsea()[:, :, ::-1]})
    address = f"127.0.0.1:{_free_port()}"
    res = _cli("patches", "--manifest", str(tmp_path / "s"), "--size", "128", "--executor", "ray",
               "--ray-address", address)
    _one_line_error(res, address, "--ray-address")
    monkeypatch.setenv("RAY_ADDRESS", f"ray://{address}")
    _one_line_error(_cli("score", "--manifest", str(tmp_path / "s"), "--executor", "ray"), address, "RAY_ADDRESS")
    batch = pa.RecordBatch.from_pylist([{"k": "a"}])
    with pytest.raises(ExecutorError, match="Ray cluster at nonsense"):
        list(execute(EchoStage(tmp_path), iter([batch]), ExecutorConfig(executor="ray", ray_address="nonsense")))
    assert not ray.is_initialized() and not (tmp_path / "s" / "patches").exists()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One small Ray for the module (two CPUs, one declared GPU for the GPU path); the executor joins it."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # EchoStage: workers cannot import tests/
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20)
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _on_ray(**kw: object) -> DriverConfig:
    return DriverConfig(executor=ExecutorConfig(executor="ray", **kw), progress=False)


class EchoStage(Stage):
    """Test stage: records its setup (one file per actor) and returns each batch whole, tagged by the actor."""

    name = "echo"
    table = "scores"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pid = 0

    def candidates_sql(self) -> tuple[str, list[Any]]:
        """Unused: the test feeds batches itself."""
        return "", []

    def fingerprints(self) -> dict[str, str]:
        """One unit."""
        return {"": "fp"}

    def setup(self) -> None:
        """One file per setup call."""
        self.pid = os.getpid()
        (self.folder / f"setup-{self.pid}-{id(self)}").write_text(os.environ.get("MILLION_IRD_ECHO", "unset"))

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch as it came, plus the pid of the worker; a batch of key 'empty*' gives zero rows."""
        if batch.column("k")[0].as_py().startswith("empty"):
            batch = batch.slice(0, 0)
        return batch.append_column("pid", pa.array([self.pid] * batch.num_rows, pa.int64()))


def test_actor_setup_once_and_batches_whole(tmp_path: Path, ray_cluster: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """setup() once per actor; process() gets each driver batch exactly; odd Arrow types and empty outputs survive;
    MILLION_IRD_* variables reach the actors.

    Run on the GPU path (two actors of half the declared GPU: Ray then needs an integer batch size)."""
    monkeypatch.setenv("MILLION_IRD_ECHO", "from the driver")
    schema = pa.schema([("k", pa.large_string()), ("due", pa.list_(pa.string())), ("x", pa.float16()),
                        ("t", pa.timestamp("us", tz="UTC")), ("d", pa.dictionary(pa.int8(), pa.string()))])
    sizes = [3, 1, 3, 2, 3, 3, 1]
    batches = []
    for b, n in enumerate(sizes):
        keys = [f"{'empty' if b == 2 else 'b'}{b}-{i}" for i in range(n)]
        batches.append(pa.RecordBatch.from_pylist(
            [{"k": k, "due": ["u"] * i, "x": float(i) if i else None, "t": None, "d": "a" if i % 2 else None}
             for i, k in enumerate(keys)], schema=schema))
    on_gpus = ExecutorConfig(executor="ray", workers=2, gpus_per_worker=0.5)
    out = list(execute(EchoStage(tmp_path), iter(batches), on_gpus))
    setups = [p.read_text() for p in tmp_path.glob("setup-*")]
    assert setups == ["from the driver"] * 2  # two actors, one setup each (none in this process)
    assert all(o.schema == schema.append(pa.field("pid", pa.int64())) for o in out)
    got = sorted(tuple(o.column("k").to_pylist()) for o in out)
    want = sorted(tuple(b.column("k").to_pylist()) if i != 2 else () for i, b in enumerate(batches))
    assert got == want  # each output is one whole input batch (the empty one included), never a mix
    kept = [b for i, b in enumerate(batches) if i != 2]
    assert pa.Table.from_batches(out).drop_columns("pid").sort_by("k").equals(
        pa.Table.from_batches(kept).sort_by("k"))


def test_ray_scores_equal_local(tmp_path: Path, ray_cluster: None) -> None:
    """Same (image, metric) rows, bit-identical values, same errors (a corrupt file, an image too small for NIQE)."""
    cfg = ScoreConfig(metrics=("niqe", "brisque"), images_per_task=2)
    local, on_ray = _store(tmp_path / "local", _images()), _store(tmp_path / "ray", _images())
    a = run_score(local, cfg, LOCAL)
    b = run_score(on_ray, cfg, _on_ray(workers=2))
    assert (a["pending"], a["rows"], a["errors"]) == (b["pending"], b["rows"], b["errors"]) == (6, 12, 3)
    sql = "SELECT image_id, metric, value, error, retryable, fingerprint FROM scores ORDER BY image_id, metric"

    def rows(store: Store) -> list[dict]:  # each store's own root left out of error texts (they name the file)
        return [{**r, "error": r["error"] and r["error"].replace(str(store.root), "ROOT")}
                for r in store.query(sql).to_pylist()]

    assert rows(local) == rows(on_ray)
    assert run_score(on_ray, cfg, _on_ray(workers=2))["pending"] == 0  # resumes like the local executor


def _members(store: Store) -> dict[str, bytes]:
    """Every member of every patch shard in the store: 'shard-name/member' -> bytes."""
    out = {}
    for shard in sorted((store.root / "files" / "patches").glob("*/*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                out[f"{shard.parent.name}/{m.name}"] = tar.extractfile(m).read()  # type: ignore[union-attr]
    return out


def test_ray_patches_equal_local(tmp_path: Path, ray_cluster: None) -> None:
    """Same patch rows, the same batches (one shard per batch, same members and offsets), same pixels read back."""
    cfg = PatchesConfig(size=128, images_per_batch=2, shard_mb=64)
    local, on_ray = _store(tmp_path / "local", _images()), _store(tmp_path / "ray", _images())
    run_patches(local, cfg, LOCAL)
    stats = run_patches(on_ray, cfg, _on_ray(workers=2))
    sql = "SELECT patch_id, image_id, x, y, flat_ratio, kept, error FROM patches ORDER BY image_id, patch_id"
    rows = local.query(sql).to_pylist()
    assert [{**r, "error": r["error"] and r["error"].replace(str(local.root), "")} for r in rows] == [
        {**r, "error": r["error"] and r["error"].replace(str(on_ray.root), "")} for r in on_ray.query(sql).to_pylist()]
    assert {r["kept"] for r in rows} == {True, False} and stats["errors"] == 1  # flat cells dropped, corrupt row

    def sharded(store: Store) -> tuple[set[frozenset[tuple]], dict[str, dict]]:
        kept = store.query("SELECT * FROM patches WHERE kept").to_pylist()
        by_shard: dict[str, set[tuple]] = {}
        for r in kept:
            by_shard.setdefault(r["shard"], set()).add((r["patch_id"], r["member"], r["byte_offset"], r["nbytes"]))
        return {frozenset(v) for v in by_shard.values()}, {r["patch_id"]: r for r in kept}

    shards_a, kept_a = sharded(local)
    shards_b, kept_b = sharded(on_ray)
    assert len(shards_a) == 3 and shards_a == shards_b  # astro+camera16 | chelsea+corrupt | flat (tiny: too small)
    members_a, members_b = _members(local), _members(on_ray)
    assert len(members_a) == len(kept_a) and len(members_b) == len(kept_b)  # every member has its row
    by_name_a = {k.split("/", 1)[1]: v for k, v in members_a.items()}
    by_name_b = {k.split("/", 1)[1]: v for k, v in members_b.items()}
    assert by_name_a.keys() == by_name_b.keys()
    for name, blob in by_name_a.items():
        pa_ = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
        pb = cv2.imdecode(np.frombuffer(by_name_b[name], np.uint8), cv2.IMREAD_UNCHANGED)
        assert pa_.dtype == pb.dtype and np.array_equal(pa_, pb), name
    for patch_id, ra in kept_a.items():  # and the rows' offsets point at those pixels
        rb = kept_b[patch_id]
        pa_ = read_image(local.root / f"{ra['shard']}#{ra['byte_offset']}+{ra['nbytes']}")
        pb = read_image(on_ray.root / f"{rb['shard']}#{rb['byte_offset']}+{rb['nbytes']}")
        assert pa_.dtype == pb.dtype and np.array_equal(pa_, pb)
