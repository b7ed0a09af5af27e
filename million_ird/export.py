"""Export a store's kept patches as a Hugging Face Parquet dataset or as WebDataset tar shards.

What is exported: the store's `kept_patches` (the kept patches of the settings in force, of images the latest
dedup did not drop), in `selection` if one is given. Each patch's PNG bytes are
copied from its shard as they are, never decoded or re-encoded, so the pixels are the store's exactly.
Rows go out in shard then byte-offset order, so the shards are read front to back.

- `hf`: OUT/data/train-00000-of-000NN.parquet with an `image` column ({"bytes", "path"}: the PNG and its
  member name) and the metadata columns of `METADATA`; the Hugging Face feature description is embedded in
  the Parquet schema (the "huggingface" metadata key), so `datasets.load_dataset("parquet", ...)` decodes
  `image` as an Image feature. Row groups of `ROW_GROUP` rows, as the Hub's viewer prefers for images.
- `webdataset`: OUT/shard-000000.tar, ... with `<key>.png` (the same bytes) and `<key>.json` (metadata)
  per patch; key = patch_id with every character other than letters, digits, `_` and `-` made `_`.

Both write the dataset card OUT/README.md (`million_ird.dataset_card`) with the features in its header, so
`datasets.load_dataset(OUT)` reads either format with the right types. Everything is written into
OUT.tmp-xxxx beside OUT and renamed to OUT only when complete; an existing OUT is refused unless
`overwrite` is set (then swapped out in one step and removed). Export only reads the store and takes no
lock, like `query`; run it while no `compact` rewrites the store's part files.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from million_ird.filter import exchange_dirs
from million_ird.images import resolve
from million_ird.store import Store, StoreError

log = logging.getLogger(__name__)

FORMATS = ("hf", "webdataset")
ROW_GROUP = 100  # rows per Parquet row group (images: the Hub's viewer reads row groups whole)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UNSAFE_KEY = r"[^A-Za-z0-9_-]"  # webdataset splits a member name at its first dot: key, then extension
METADATA = pa.schema(
    [
        pa.field("patch_id", pa.string()),
        pa.field("image_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("x", pa.int32()),
        pa.field("y", pa.int32()),
        pa.field("size", pa.int32()),
        pa.field("flat_ratio", pa.float32()),
        pa.field("niqe", pa.float64()),
        pa.field("brisque", pa.float64()),
        pa.field("nima", pa.float64()),
        pa.field("url", pa.string()),
    ]
)
LOCATION = ("shard", "member", "byte_offset", "nbytes")
EXPORT_SQL = """
SELECT p.patch_id, p.image_id, c.source, p.x, p.y, p.size, p.flat_ratio, c.niqe, c.brisque, c.nima, c.url,
       p.shard, p.member, p.byte_offset, p.nbytes
FROM kept_patches p JOIN catalog c USING (image_id) {selection}
"""


class ExportError(StoreError):
    """An export that cannot go ahead (the message says what to do)."""


@dataclass(frozen=True)
class ExportConfig:
    """Output format and folder, the selection to restrict to, rows per output file, overwrite."""

    format: str
    out: Path
    selection: str | None = None
    shard_size: int = 1000
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"--format {self.format!r}: choose one of {', '.join(FORMATS)}")
        if self.shard_size < 1:
            raise ExportError(f"--shard-size {self.shard_size}: must be at least 1")


@dataclass
class ExportPlan:
    """What one export writes: the SQL and its parameters, counts per source, patch sizes, file count."""

    sql: str
    params: list[Any]
    per_source: list[dict[str, Any]]
    sizes: list[int]
    total: int
    files: int
    sixteen_bit_images: int = 0


def hf_features() -> Any:
    """The `datasets.Features` of the hf format: `image` (Image) first, then the metadata columns."""
    import datasets

    dtypes = {pa.string(): "string", pa.int32(): "int32", pa.float32(): "float32", pa.float64(): "float64"}
    return datasets.Features({"image": datasets.Image(),
                              **{f.name: datasets.Value(dtypes[f.type]) for f in METADATA}})


def wds_features() -> Any:
    """The `datasets.Features` of a webdataset sample: key, shard url, `png` (Image), `json` (the metadata)."""
    import datasets

    meta = {name: feature for name, feature in hf_features().items() if name != "image"}
    return datasets.Features({"__key__": datasets.Value("string"), "__url__": datasets.Value("string"),
                              "png": datasets.Image(), "json": meta})


def sample_key(patch_id: str) -> str:
    """The webdataset key of a patch: patch_id with characters webdataset misreads (dots, slashes) made `_`."""
    return re.sub(UNSAFE_KEY, "_", patch_id)


def check_out(store: Store, out: Path, overwrite: bool) -> Path:
    """The resolved output folder; refuses an existing one without `overwrite`, and any place the store's
    own files are (`Store.check_output`: inside the store only under DIR/export/)."""
    out = store.check_output(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise ExportError(f"{out} already exists; choose another --out, or pass --overwrite to replace it")
        if not out.is_dir() or out.is_symlink():
            raise ExportError(f"{out} exists and is not a folder; --overwrite replaces folders only")
    return out


def plan(store: Store, cfg: ExportConfig) -> ExportPlan:
    """Check the store has what an export needs and count what `cfg` exports (one-line errors otherwise)."""
    manifest = store.root
    if not store.query("SELECT count(*) FROM patches").column(0)[0].as_py():
        raise ExportError(f"{manifest} has no patches yet; run `million-ird patches --manifest {manifest}` first")
    selection, params = "", []
    if cfg.selection:
        store.check_selection(cfg.selection)
        selection = "WHERE image_id IN (SELECT image_id FROM selections WHERE selection = ?)"
        params = [cfg.selection]
    sql = EXPORT_SQL.format(selection=selection)
    with store.connect() as con:
        per_source = con.sql(f"SELECT source, count(DISTINCT image_id) AS images, count(*) AS patches FROM "
                             f"({sql}) GROUP BY source ORDER BY source", params=params).to_arrow_table().to_pylist()
        sizes = [r[0] for r in con.execute(f"SELECT DISTINCT size FROM ({sql}) ORDER BY 1", params).fetchall()]
        unique, deep = con.execute(
            f"SELECT count(DISTINCT regexp_replace(patch_id, '{UNSAFE_KEY}', '_', 'g')) = count(*), "
            f"(SELECT count(*) FROM catalog WHERE bit_depth > 8 AND image_id IN (SELECT image_id FROM ({sql}))) "
            f"FROM ({sql})", params + params).fetchone()
    total = sum(r["patches"] for r in per_source)
    if not total:
        where = f" in selection {cfg.selection!r}" if cfg.selection else ""
        raise ExportError(f"no kept patch{where} to export in {manifest} (patches of the settings in force, of "
                          f"images dedup kept); see `million-ird stats --manifest {manifest}` or run "
                          f"`million-ird patches --manifest {manifest}`")
    if not unique:
        raise ExportError("two patch ids map to the same webdataset key; this store's patch ids are not unique")
    return ExportPlan(sql=f"{sql} ORDER BY p.shard, p.byte_offset, p.patch_id", params=params, per_source=per_source,
                      sizes=sizes, total=total, files=math.ceil(total / cfg.shard_size), sixteen_bit_images=deep)


class ShardReader:
    """Reads members' bytes from the store's tar shards, keeping the current shard open."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._name: str | None = None
        self._fh: BinaryIO | None = None

    def read(self, shard: str, offset: int, nbytes: int, patch_id: str) -> bytes:
        """The `nbytes` bytes at `offset` of `shard`; refuses short reads and anything that is not a PNG."""
        if shard != self._name:
            self.close()
            path = resolve(self.root, shard)
            try:
                self._fh = open(path, "rb")  # noqa: SIM115 (kept open across rows, closed in close())
            except OSError as exc:
                raise ExportError(f"patch {patch_id}: cannot open its shard {path}: {exc.strerror or exc}") from exc
            self._name = shard
        assert self._fh is not None
        self._fh.seek(offset)
        data = self._fh.read(nbytes)
        if len(data) != nbytes or not data.startswith(PNG_SIGNATURE):
            raise ExportError(f"patch {patch_id}: {shard} at {offset}+{nbytes} is not the PNG the patches table "
                              "records (shard truncated or replaced); nothing was exported")
        return data

    def close(self) -> None:
        """Close the open shard, if any."""
        if self._fh is not None:
            self._fh.close()
        self._fh, self._name = None, None


class Writer(Protocol):
    """Writes rows (metadata table + PNG bytes per row) into one export folder."""

    def write(self, rows: pa.Table, images: list[bytes]) -> None:
        """Append rows; `images[i]` is the PNG of row i."""

    def close(self) -> list[Path]:
        """Finish the last file; returns every file written."""


class ParquetShards:
    """hf format: data/train-IIIII-of-NNNNN.parquet, `per_file` rows each, with the Image feature embedded."""

    def __init__(self, folder: Path, per_file: int, files: int) -> None:
        self.folder, self.per_file, self.files = folder / "data", per_file, files
        self.folder.mkdir(parents=True)
        self.schema: pa.Schema = hf_features().arrow_schema
        self._writer: pq.ParquetWriter | None = None
        self._rows, self._written = 0, []

    def _next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        path = self.folder / f"train-{len(self._written):05d}-of-{self.files:05d}.parquet"
        self._writer = pq.ParquetWriter(path, self.schema, compression="snappy")
        self._written.append(path)
        self._rows = 0

    def write(self, rows: pa.Table, images: list[bytes]) -> None:
        """Append rows, starting a new file every `per_file` rows."""
        image = pa.StructArray.from_arrays([pa.array(images, pa.binary()), rows.column("member").combine_chunks()],
                                           names=["bytes", "path"])
        table = pa.Table.from_arrays([image, *(rows.column(f.name).cast(f.type) for f in METADATA)],
                                     schema=self.schema)
        start = 0
        while start < table.num_rows:
            if self._writer is None or self._rows == self.per_file:
                self._next()
            take = min(self.per_file - self._rows, table.num_rows - start)
            assert self._writer is not None
            self._writer.write_table(table.slice(start, take), row_group_size=ROW_GROUP)
            self._rows += take
            start += take

    def close(self) -> list[Path]:
        """Close the last file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self._written


class TarShards:
    """webdataset format: shard-IIIIII.tar with `<key>.png` + `<key>.json` per patch, `per_file` patches each."""

    def __init__(self, folder: Path, per_file: int) -> None:
        self.folder, self.per_file = folder, per_file
        folder.mkdir(parents=True)
        self._tar: tarfile.TarFile | None = None
        self._samples, self._written = 0, []

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: the same store gives the same bytes
        assert self._tar is not None
        self._tar.addfile(info, io.BytesIO(data))

    def write(self, rows: pa.Table, images: list[bytes]) -> None:
        """Append one sample per row, starting a new shard every `per_file` samples."""
        for meta, png in zip(rows.select(METADATA.names).to_pylist(), images, strict=True):
            if self._tar is None or self._samples == self.per_file:
                self.close()
                path = self.folder / f"shard-{len(self._written):06d}.tar"
                self._tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)
                self._written.append(path)
                self._samples = 0
            key = sample_key(meta["patch_id"])
            self._add(f"{key}.png", png)
            self._add(f"{key}.json", json.dumps(meta, sort_keys=True).encode())
            self._samples += 1

    def close(self) -> list[Path]:
        """Close the open shard."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        return self._written


def _write_rows(store: Store, cfg: ExportConfig, the_plan: ExportPlan, writer: Writer) -> int:
    """Stream the plan's rows from DuckDB through the shard reader into `writer`; returns the rows written."""
    reader, done = ShardReader(store.root), 0
    with store.connect() as con, tqdm(total=the_plan.total, desc="export", unit="patch",
                                      disable=not cfg.progress) as bar:
        batches = con.sql(the_plan.sql, params=the_plan.params).to_arrow_reader(ROW_GROUP)
        try:
            for batch in batches:
                rows = pa.Table.from_batches([batch])
                images = [reader.read(s, o, n, p) for s, o, n, p in zip(
                    *(rows.column(c).to_pylist() for c in ("shard", "byte_offset", "nbytes", "patch_id")),
                    strict=True)]
                writer.write(rows, images)
                done += rows.num_rows
                bar.update(rows.num_rows)
        finally:
            reader.close()
    return done


def _install(tmp: Path, out: Path) -> None:
    """Move the finished temp folder to `out` (swapping out and removing an existing one)."""
    try:
        if out.exists():
            exchange_dirs(tmp, out)  # tmp now holds the old export
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    except OSError as exc:
        raise ExportError(f"cannot move the finished export into {out}: {exc}; nothing was changed there") from exc


def run_export(store: Store, cfg: ExportConfig) -> dict[str, Any]:
    """Export the store's kept patches by `cfg` (see the module docstring); returns counts and files."""
    from million_ird.dataset_card import card_text

    out = check_out(store, cfg.out, cfg.overwrite)
    the_plan = plan(store, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        writer: Writer = (ParquetShards(tmp, cfg.shard_size, the_plan.files) if cfg.format == "hf"
                          else TarShards(tmp, cfg.shard_size))
        try:
            written = _write_rows(store, cfg, the_plan, writer)
        finally:
            files = writer.close()
        if written != the_plan.total or len(files) != the_plan.files:
            raise ExportError(f"the store changed during the export ({written} rows written, {the_plan.total} "
                              "counted); run it again")
        (tmp / "README.md").write_text(card_text(store, cfg, the_plan))
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"out": str(out), "format": cfg.format, "patches": written, "files": len(files), "bytes": nbytes,
            "per_source": the_plan.per_source, "card": str(out / "README.md")}
