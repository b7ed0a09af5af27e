"""`million-ird export`: hf Parquet and webdataset round trips (same bytes, same pixels), the card, refusals."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from million_ird.cli.export import register
from million_ird.dataset_card import NOT_FROM_RECIPE
from million_ird.export import sample_key
from million_ird.store import Store, new_run_id

# what export takes: the kept patches of the settings in force, of images the dedup run in force kept
KEPT = "SELECT count(*) FROM latest_patches p JOIN catalog c USING (image_id) WHERE p.kept AND NOT c.duplicate_dropped"


def export_app() -> typer.Typer:
    """An app with only `export` (the main app gains it when million_ird.cli wires the module in)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def run_export(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(export_app(), ["export", *args])
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def store(demo_build: tuple[Path, str]) -> Store:
    return Store(demo_build[0])  # the session's demo store: 256² patches in tar shards


@pytest.fixture(scope="module")
def hf_out(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "export"
    code, stdout, stderr = run_export("-m", str(store.root), "--format", "hf", "--out", str(out), "--shard-size", "5")
    assert code == 0, stderr
    assert "TOTAL" in stdout and "README.md" in stdout
    return out


@pytest.fixture(scope="module")
def wds_out(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wds") / "export"
    code, _, stderr = run_export("-m", str(store.root), "--format", "webdataset", "--out", str(out),
                                 "--shard-size", "4")
    assert code == 0, stderr
    return out


def kept_patches(store: Store) -> dict[str, dict]:
    """The store's kept patches of the settings in force, by patch_id, with their catalog metadata."""
    rows = store.query("SELECT p.*, c.source, c.niqe, c.brisque, c.nima, c.url FROM latest_patches p "
                       "JOIN catalog c USING (image_id) WHERE p.kept AND NOT c.duplicate_dropped").to_pylist()
    return {r["patch_id"]: r for r in rows}


def shard_member(store: Store, row: dict) -> bytes:
    """The patch's PNG read from the store's shard by member name with tarfile (not by the recorded offset)."""
    with tarfile.open(store.root / row["shard"]) as tar:
        fh = tar.extractfile(row["member"])
        assert fh is not None, row["member"]
        return fh.read()


def pil_pixels(data: bytes) -> tuple[str, np.ndarray]:
    """(mode, pixels) of PNG bytes, decoded with PIL alone."""
    with Image.open(io.BytesIO(data)) as img:
        return img.mode, np.asarray(img)


def same_pixels(exported: Image.Image | bytes, member: bytes) -> bool:
    """Whether an exported picture (a decoded PIL image or PNG bytes) has exactly the shard member's pixels."""
    if isinstance(exported, bytes):
        mode, pixels = pil_pixels(exported)
    else:
        mode, pixels = exported.mode, np.asarray(exported)
    want_mode, want = pil_pixels(member)
    return mode == want_mode and pixels.dtype == want.dtype and np.array_equal(pixels, want)


def metadata_mismatches(patch_id: str, got: dict, src: dict) -> list[str]:
    """The metadata fields of an exported row that differ from the store's."""
    bad = [f"{patch_id}: {k}" for k in ("image_id", "source", "x", "y", "size", "niqe", "brisque", "nima", "url")
           if got[k] != src[k]]
    return bad + ([f"{patch_id}: flat_ratio"] if got["flat_ratio"] != pytest.approx(src["flat_ratio"]) else [])


def hf_mismatches(store: Store, out: Path, cache: Path) -> list[str]:
    """Everything about an hf export that differs from the store: bytes, pixels, metadata, missing rows."""
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "train-*.parquet"), split="train",
                               cache_dir=str(cache))
    problems = [] if isinstance(ds.features["image"], datasets.Image) else ["image is not an Image feature"]
    raw = ds.cast_column("image", datasets.Image(decode=False))
    expected, seen = kept_patches(store), []
    for row, undecoded in zip(ds, raw, strict=True):
        pid, png = row["patch_id"], undecoded["image"]["bytes"]
        src = expected.get(pid)
        if src is None:
            problems.append(f"{pid}: not a kept patch")
            continue
        seen.append(pid)
        member = shard_member(store, src)
        problems += [f"{pid}: bytes"] if png != member else []  # copied, never re-encoded
        problems += [f"{pid}: pixels"] if not same_pixels(row["image"], member) else []
        problems += [f"{pid}: path"] if undecoded["image"]["path"] != src["member"] else []
        problems += metadata_mismatches(pid, row, src)
    if sorted(seen) != sorted(expected):
        problems.append(f"rows {sorted(seen)} != kept patches {sorted(expected)}")
    return problems


def wds_samples(out: Path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} of every member of the tar shards, split at the first dot as webdataset does."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                fh = tar.extractfile(member)
                assert fh is not None and ext not in samples[key]
                samples[key][ext] = fh.read()
    return samples


def wds_mismatches(store: Store, out: Path) -> list[str]:
    """Everything about a webdataset export that differs from the store: members, bytes, pixels, metadata."""
    expected, seen, problems = kept_patches(store), [], []
    for key, parts in wds_samples(out).items():
        if set(parts) != {"png", "json"}:
            problems.append(f"{key}: members {sorted(parts)}")
            continue
        meta = json.loads(parts["json"])
        pid = meta["patch_id"]
        src = expected.get(pid)
        if src is None or key != pid:
            problems.append(f"{key}: not the key of a kept patch")
            continue
        seen.append(pid)
        member = shard_member(store, src)
        problems += [f"{pid}: bytes"] if parts["png"] != member else []
        problems += [f"{pid}: pixels"] if not same_pixels(parts["png"], member) else []
        problems += metadata_mismatches(pid, meta, src)
    if sorted(seen) != sorted(expected):
        problems.append(f"samples {sorted(seen)} != kept patches {sorted(expected)}")
    return problems


def tampered_png(png: bytes, change_pixel: bool) -> bytes:
    """The PNG re-encoded by PIL (other bytes), with one pixel changed or not."""
    mode, pixels = pil_pixels(png)
    pixels = pixels.copy()
    if change_pixel:
        pixels[0, 0] ^= 1
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_hf_export_round_trips_through_load_dataset(store: Store, hf_out: Path, tmp_path: Path) -> None:
    files = sorted((hf_out / "data").glob("*.parquet"))
    total = store.query(KEPT).column(0)[0].as_py()
    assert total == len(kept_patches(store)) > 5  # the demo: patches of 5 images
    n = -(-total // 5)  # --shard-size 5
    assert [f.name for f in files] == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [5] * (n - 1) + [total - 5 * (n - 1)]
    assert b"huggingface" in pq.read_schema(files[0]).metadata
    assert hf_mismatches(store, hf_out, tmp_path / "hf-cache") == []


def test_hf_round_trip_check_catches_changed_pixels_and_bytes(store: Store, hf_out: Path, tmp_path: Path) -> None:
    """The check above can fail: one row with a pixel changed, one re-encoded with the same pixels."""
    copy = Path(shutil.copytree(hf_out, tmp_path / "tampered"))
    first = sorted((copy / "data").glob("*.parquet"))[0]
    table = pq.read_table(first)
    images = table.column("image").to_pylist()
    images[0] = {**images[0], "bytes": tampered_png(images[0]["bytes"], change_pixel=True)}
    images[1] = {**images[1], "bytes": tampered_png(images[1]["bytes"], change_pixel=False)}
    column = pa.array(images, table.schema.field("image").type)
    pq.write_table(table.set_column(0, table.schema.field("image"), column), first)
    ids = table.column("patch_id").to_pylist()
    assert hf_mismatches(store, copy, tmp_path / "hf-cache") == [f"{ids[0]}: bytes", f"{ids[0]}: pixels",
                                                                 f"{ids[1]}: bytes"]


def test_webdataset_export_round_trips(store: Store, wds_out: Path, tmp_path: Path) -> None:
    import datasets

    shards = sorted(wds_out.glob("*.tar"))
    total = store.query(KEPT).column(0)[0].as_py()
    assert [s.name for s in shards] == [f"shard-{i:06d}.tar" for i in range(-(-total // 4))]  # 4 per shard
    assert len(wds_samples(wds_out)) == total
    assert wds_mismatches(store, wds_out) == []
    # the card's snippet: `datasets` reads the folder with the card's features and gives the same pixels
    ds = datasets.load_dataset(str(wds_out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(ds.features["png"], datasets.Image) and ds.features["json"]["url"].dtype == "string"
    expected = kept_patches(store)
    assert sorted(ds["__key__"]) == sorted(expected)
    for row in ds:
        assert same_pixels(row["png"], shard_member(store, expected[row["json"]["patch_id"]]))


def test_webdataset_round_trip_check_catches_a_changed_pixel(store: Store, wds_out: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(wds_out, tmp_path / "tampered"))
    shard = copy / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    changed = members[0][0].name.split(".")[0]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            data = tampered_png(data, change_pixel=True) if m.name == f"{changed}.png" else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    assert wds_mismatches(store, copy) == [f"{changed}: bytes", f"{changed}: pixels"]


def _card(out: Path) -> tuple[dict, str]:
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_card_has_front_matter_counts_thresholds_and_licences(store: Store, hf_out: Path, wds_out: Path) -> None:
    from huggingface_hub import DatasetCard

    meta, body = _card(hf_out)
    assert meta["license"] == "other" and meta["task_categories"] == ["image-to-image"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert DatasetCard((hf_out / "README.md").read_text()).data.license == "other"  # the Hub's own parser
    assert _card(wds_out)[0]["configs"][0]["data_files"][0]["path"] == "shard-*.tar"
    assert {"name": "image", "dtype": "image"} in meta["dataset_info"]["features"]
    per_source = store.query("SELECT c.source, count(DISTINCT image_id) AS images, count(*) AS patches FROM "
                             "latest_patches p JOIN catalog c USING (image_id) WHERE p.kept AND NOT c.duplicate_dropped "
                             "GROUP BY 1").to_pylist()
    assert len(per_source) == 2
    for r in per_source:
        assert f"| {r['source']} | {r['images']} | {r['patches']} |" in body
    assert "niqe < 5.0" in body and "brisque < 35.0" in body and "selection `demo`" in body
    assert "256x256" in body and "below 150.0" in body and "more than 0.5" in body
    assert "5x5-ring" in body and "sigma 0.8 px" in body  # the whole detector, from the patches run record
    assert ("No dedup run" in body) is (store.latest_run("dedup") is None)
    sha = json.loads(next((store.root / "runs").glob("*-patches-*.json")).read_text())["recipe_sha256"]
    assert sha in body and NOT_FROM_RECIPE not in body
    assert "million-ird 0.1.0 (git " in body
    assert "### DIV2K" in body and "academic research use only" in body and "### laion-hr" in body
    assert "CC-BY-4.0" in body and "as the build recipe states" in body


def test_existing_out_is_refused_unless_overwrite(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, stderr = run_export("-m", str(store.root), "--format", "hf", "--out", str(out))
    assert code == 2 and stderr.count("\n") == 1 and "already exists" in stderr and "--overwrite" in stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, _, stderr = run_export("-m", str(store.root), "--format", "webdataset", "--out", str(out), "--overwrite")
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "shard-000000.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp folder left beside it
    code, _, stderr = run_export("-m", str(store.root), "--format", "hf", "--out", str(store.root), "--overwrite")
    assert code == 2 and "is the store" in stderr and (store.root / "patches").is_dir()


@pytest.mark.parametrize("inside", ["patches", "files/patches", "runs", "export"])
def test_overwrite_never_replaces_what_the_store_holds(store: Store, tmp_path: Path, inside: str) -> None:
    copy = Store(shutil.copytree(store.root, tmp_path / "store"))
    before = sorted(str(p.relative_to(copy.root)) for p in copy.root.rglob("*"))
    code, _, stderr = run_export("-m", str(copy.root), "--format", "hf", "--out", str(copy.root / inside), "--overwrite")
    assert code == 2 and stderr.count("\n") == 1 and "inside the store" in stderr and "export/NAME" in stderr
    assert sorted(str(p.relative_to(copy.root)) for p in copy.root.rglob("*")) == before
    code, _, stderr = run_export("-m", str(copy.root), "--format", "hf", "--out", str(copy.root / "export" / "mine"))
    assert code == 0, stderr
    assert (copy.root / "export" / "mine" / "README.md").is_file()


def test_store_without_patches_names_the_patches_command(store: Store, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(store.root, bare, ignore=shutil.ignore_patterns("patches", "pairs"))
    code, _, stderr = run_export("-m", str(bare), "--format", "hf", "--out", str(tmp_path / "out"))
    assert code == 2 and stderr.count("\n") == 1 and "million-ird patches" in stderr
    assert not (tmp_path / "out").exists()
    code, _, stderr = run_export("-m", str(store.root), "--format", "tfrecord", "--out", str(tmp_path / "out"))
    assert code == 2 and stderr.count("\n") == 1 and "webdataset" in stderr


def test_selection_and_dedup_restrict_the_export(store: Store, tmp_path: Path) -> None:
    copy = Store(shutil.copytree(store.root, tmp_path / "store"))
    code, _, stderr = run_export("-m", str(copy.root), "--format", "hf", "--out", str(tmp_path / "x"),
                                 "--selection", "nosuch")
    assert code == 2 and "no selection 'nosuch'" in stderr
    dropped = sorted({r["image_id"] for r in kept_patches(copy).values()})[0]
    run_id = new_run_id("dedup")  # a dedup run in force that drops one image with kept patches
    copy.append("duplicates", pa.Table.from_pylist([{
        "image_id": dropped, "group_id": "other", "kept": False, "reason": "near", "matched": "other",
        "distance": 4, "fingerprint": "f", "run_id": run_id}]), run_id)
    copy.save_run("dedup", run_id, {"stage": {"max_distance": 8}}, {})
    expected = kept_patches(copy)
    assert expected and not any(r["image_id"] == dropped for r in expected.values())
    out = tmp_path / "deduped"
    code, _, stderr = run_export("-m", str(copy.root), "--format", "webdataset", "--out", str(out),
                                 "--selection", "demo")
    assert code == 0, stderr
    names = sorted(m for s in out.glob("*.tar") for m in tarfile.open(s).getnames())
    assert names == sorted(f"{sample_key(k)}.{ext}" for k in expected for ext in ("png", "json"))
    body = _card(out)[1]
    assert "restricted to, selection `demo`" in body and "max_distance=8" in body
    assert "1 images dropped as duplicates (1 near)" in body


def test_card_without_the_licence_table_says_so(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed copy without manifests/sources.yaml still exports; its card marks the licences UNKNOWN."""
    from million_ird import dataset_card

    table = dataset_card.load_licences()
    assert table is not None and table["div2k"]["title"].startswith("DIV2K")
    assert "neither in manifests/sources.yaml" in "\n".join(dataset_card.licence_lines(["mystery"], table, {}))
    monkeypatch.setattr(dataset_card, "SOURCES_FILE", tmp_path / "missing" / "sources.yaml")
    assert dataset_card.load_licences() is None
    lines = dataset_card.licence_lines(["Flickr2K", "mystery"], None, {})
    assert sum(line.startswith("- Licence: UNKNOWN: the toolkit's licence table was not available")
               for line in lines) == 2
    out = tmp_path / "export"
    code, _, stderr = run_export("-m", str(store.root), "--format", "webdataset", "--out", str(out))
    assert code == 0, stderr
    body = _card(out)[1]
    assert "sources.yaml, shipped in a source checkout" in body and "was not found" in body
    assert "### DIV2K" in body and "as the build recipe states" in body  # the demo recipe's own statement stays
    assert "academic research use only" not in body  # the table's DIV2K entry is gone with the file


def test_sixteen_bit_patches_keep_all_sixteen_bits_in_the_exported_bytes(tmp_path: Path) -> None:
    """A 16-bit RGB source: the hf and webdataset bytes decode (cv2, unchanged) to the exact 16-bit patch."""
    import cv2
    import datasets

    from million_ird.driver import DriverConfig
    from million_ird.stages.patches import PatchesConfig, run_patches

    rng = np.random.default_rng(16)
    deep = rng.integers(0, 65536, (300, 300, 3), dtype=np.uint16)  # BGR as cv2 writes it
    src = tmp_path / "deep.png"
    cv2.imwrite(str(src), deep)
    store = Store(tmp_path / "store")
    store.append("images", pa.Table.from_pylist([{"image_id": "dd01", "source": "test", "path": str(src)}]))
    store.append("downloads", pa.Table.from_pylist([{"image_id": "dd01", "status": "ok", "path": str(src), "width": 300,
                                                     "height": 300, "bit_depth": 16, "attempt": 1}]))
    run_patches(store, PatchesConfig(size=256), DriverConfig(progress=False))
    want = deep[22:278, 22:278]
    for fmt in ("hf", "webdataset"):
        code, _, stderr = run_export("-m", str(store.root), "--format", fmt, "--out", str(tmp_path / fmt))
        assert code == 0, stderr
        assert "1 source images are 16-bit" in (tmp_path / fmt / "README.md").read_text()
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "hf" / "data" / "*.parquet"), split="train")
    raw = ds.cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    with tarfile.open(next((tmp_path / "webdataset").glob("*.tar"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".png"))
        wds = tar.extractfile(member).read()  # type: ignore[union-attr]
    for data in (raw, wds):
        got = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert got.dtype == np.uint16 and np.array_equal(got, want)
