"""The dataset store: one folder of Parquet part files per table, read through DuckDB views."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import re
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from million_ird import __version__, derived
from million_ird.atomic import TMP_PREFIX, atomic_path
from million_ird.lock import assert_held
from million_ird.schema import SCHEMAS, SELECTIONS

log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
JOURNAL = "_compaction.json"  # see million_ird.compact
TRAINING_DIR = "training"  # dynet_ref.train run folders (not under the store lock)
EXPORT_DIR = "export"  # the one folder of a store where exports may be written (see Store.check_output)
# libraries whose version can change the bytes or numbers a stage writes
RUN_CONTEXT: dict[str, str] = {}  # added to every run record while set (build: the recipe's name and sha256)
RECORDED_DISTRIBUTIONS = ("duckdb", "pyarrow", "img2dataset", "numpy", "opencv-python-headless", "pillow",
                          "scipy", "torch")

LATEST_DOWNLOADS = """
SELECT * FROM downloads
QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY (status = 'ok') DESC, attempt DESC, finished_at DESC) = 1
"""
# Per (image, metric): the value of the config in force (the metric's fingerprint in its latest score run),
# else of the most recent successful row (latest scored_at, then run_id; a row without scored_at counts as
# oldest). A later run of other metrics or an error row never blanks a value. One hash aggregate; the
# filter sits inside it (a NULL value: no successful row), so a GROUP BY image_id over this view is known
# unique and DuckDB drops a LEFT JOIN to it that no column is read from.
SCORE_VALUES = """
SELECT image_id, metric,
       arg_max(value, (fingerprint IN ({current}), coalesce(scored_at, TIMESTAMPTZ '-infinity'),
                       coalesce(run_id, ''))) FILTER (WHERE error IS NULL AND value IS NOT NULL) AS value
FROM scores
GROUP BY image_id, metric
"""
LATEST_SCORE_VALUES = "SELECT * FROM _score_values WHERE value IS NOT NULL"
PIVOTED_METRICS = ("niqe", "brisque", "nima")  # always catalog columns; any other metric scored is added
# the rows of one fingerprint per key: the fingerprint of the stage's latest run where the key has rows
# under it, else the key's most recent rows (so `--size 256` then `--size 512` again shows 512 again)
LATEST_BY_FINGERPRINT = """
SELECT * EXCLUDE (_rank, _fp_run) FROM (
  SELECT *, dense_rank() OVER (PARTITION BY {key} ORDER BY fingerprint IN ({current}) DESC, _fp_run DESC,
                                                           fingerprint) AS _rank
  FROM (SELECT *, max(run_id) OVER (PARTITION BY {key}, fingerprint) AS _fp_run FROM {table}))
WHERE _rank = 1
"""
# per recipe, the pairs of the set its latest finished splits run recorded (million_ird.stages.splits): pairs
# of images that stopped being a source leave with the set
LATEST_PAIR_SETS = """
SELECT p.* FROM pairs p
SEMI JOIN pair_sets s ON s.set_id IN ({sets}) AND s.pair_id = p.pair_id AND s.fingerprint = p.fingerprint
"""
# the kept patches in force of images the latest dedup kept, each with `ref` (SHARD.tar#OFFSET+NBYTES, which
# million_ird.images reads): what splits, the trainer and export take
KEPT_PATCHES = """
SELECT *, shard || '#' || byte_offset || '+' || nbytes AS ref FROM latest_patches
WHERE kept AND shard IS NOT NULL AND image_id NOT IN (SELECT image_id FROM latest_duplicates WHERE NOT kept)
"""
# the rows of the latest *finished* dedup run (its run record is written last), so a run that found no
# duplicate clears the earlier ones and a killed run's rows are never in force
LATEST_DUPLICATES = "SELECT * FROM duplicates WHERE run_id = {run}"
DOWNLOAD_PROGRESS = """
SELECT count(*) AS images, count(d.image_id) AS tried, count(*) FILTER (WHERE d.ok) AS ok
FROM images i
LEFT JOIN (SELECT image_id, bool_or(status = 'ok') AS ok FROM downloads GROUP BY image_id) d USING (image_id)
"""
# the catalog without its metric and dedup columns: every image with its latest download outcome
CATALOG_BASE = """
SELECT i.image_id, i.source, i.url, i.width AS declared_width, i.height AS declared_height,
       d.status, d.error, coalesce(d.path, i.path) AS path, d.format, d.width, d.height, d.channels,
       d.bit_depth, d.bytes, d.sha256, d.attempt
FROM images i
LEFT JOIN latest_downloads d USING (image_id)
"""
CATALOG = """
SELECT b.*, {metric_columns},
       coalesce(NOT dup.kept, false) AS duplicate_dropped, dup.reason AS duplicate_reason
FROM catalog_base b
LEFT JOIN _catalog_scores s USING (image_id)
LEFT JOIN latest_duplicates dup USING (image_id)
"""
# the views a query reads, by name, whose derived file (million_ird.derived) `Store.query` builds first
DERIVE_FOR = {"catalog_base": re.compile(r"\bcatalog(_base)?\b", re.I),
              "latest_scores": re.compile(r"\blatest_scores\b", re.I)}


class StoreError(RuntimeError):
    """A problem with the dataset store that the user must fix (message says how)."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def new_run_id(command: str) -> str:
    """A sortable, unique id for one invocation of a command."""
    return f"{utc_now():%Y%m%dT%H%M%S.%fZ}-{command}-{uuid.uuid4().hex[:6]}"  # microseconds: runs sort in order


def conform(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """Cast `table` to `schema`: order columns, add missing nullable ones as nulls, refuse unknown ones."""
    unknown = set(table.column_names) - set(schema.names)
    if unknown:
        raise StoreError(f"table {name!r}: unknown columns {sorted(unknown)}; the schema has {schema.names}")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name).cast(field.type)
            if not field.nullable and col.null_count:
                raise StoreError(f"table {name!r}: column {field.name!r} has {col.null_count} nulls")
            columns.append(col)
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise StoreError(f"table {name!r}: required column {field.name!r} is missing")
    return pa.Table.from_arrays(columns, schema=schema)


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write `table` to `path` through a temp name in the same folder, fsync, then rename."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return path


def write_json_atomic(obj: Any, path: Path) -> Path:
    """Write `obj` as indented JSON through a temp name, then rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str, sort_keys=True))
    return path


def code_version() -> dict[str, str]:
    """Versions of this package, its git commit (if any) and the libraries that shape the data."""
    versions = {"million_ird": __version__, "python": platform.python_version()}
    for dist in RECORDED_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=5, check=False)
        if out.returncode == 0:
            versions["git"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def plain(obj: Any) -> Any:
    """Dataclasses, dicts, tuples and paths as JSON-ready plain values (for run records)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclasses.dataclass(frozen=True)
class DownloadProgress:
    """How far `download` has got: images in the store, those with any outcome, those with an ok one."""

    images: int
    tried: int
    ok: int

    def blocker(self, manifest: str) -> str | None:
        """Why a stage that reads downloaded images has nothing to work on; None when some image is ok."""
        download = f"`million-ird download --manifest {manifest}`"
        if self.images == 0:
            return f"the store has no images yet; run `million-ird ingest --manifest {manifest} ...` first"
        if self.ok:
            return None
        if self.tried == 0:
            return (f"no image is downloaded yet ({self.images} in the store, none fetched or verified); run "
                    f"{download} first (it verifies local folders in place too, copying nothing)")
        return (f"no image has an ok download outcome ({self.tried} failed, {self.images - self.tried} not tried yet); "
                f"run {download} (it retries failures up to --retries attempts and verifies local folders in "
                f"place); `million-ird stats --manifest {manifest}` lists the errors")

    def note(self, manifest: str) -> str | None:
        """A reminder when some images are ok but others have no download outcome yet; else None."""
        untried = self.images - self.tried
        if not self.ok or not untried:
            return None
        return (f"note: {untried} of {self.images} images have no download outcome yet; run "
                f"`million-ird download --manifest {manifest}` to fetch or verify them")


def _literal(value: str | None) -> str:
    """A SQL string literal (NULL for None)."""
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _literals(values: Iterable[str]) -> str:
    """A comma list of SQL string literals for IN (...); NULL when empty (matches nothing)."""
    return ", ".join(_literal(v) for v in values) or "NULL"


class Store:
    """A dataset directory: append-only Parquet tables, files/, runs/, read through DuckDB."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    @property
    def files_dir(self) -> Path:
        """Where downloaded originals and patch shards live."""
        return self.root / "files"

    def parts(self, table: str) -> list[Path]:
        """The committed part files of `table`: never temp files, never both sides of a compaction."""
        folder = self.root / table
        found = sorted(folder.glob(PART_GLOB))
        journal = folder / JOURNAL
        if not journal.exists():
            return found
        try:
            entry = json.loads(journal.read_text())
        except (OSError, ValueError):  # finished and removed while we read it
            return sorted(folder.glob(PART_GLOB))
        complete = all((folder / m).exists() for m in entry["merged"])
        hidden = set(entry["replaced"] if complete else entry["merged"])
        return [p for p in found if p.name not in hidden]

    def append(self, table: str, rows: pa.Table, run_id: str | None = None) -> Path | None:
        """Append `rows` to `table` as a new part file; returns its path (None for zero rows)."""
        if table not in SCHEMAS:
            raise StoreError(f"unknown table {table!r}; tables are {sorted(SCHEMAS)}")
        if rows.num_rows == 0:
            return None
        data = conform(rows, SCHEMAS[table], table)
        stem = run_id or new_run_id(table)
        name = f"part-{stem}-{uuid.uuid4().hex[:8]}.parquet"
        return write_parquet_atomic(data, self.root / table / name)

    def clean_temp(self) -> int:
        """Remove temp files a killed writer left behind; returns how many were removed.

        Only under the store lock (`million_ird.lock.store_lock`): no other writer is alive then, so
        every temp file is a dead one's.
        """
        removed = 0
        if not self.root.exists():
            return 0
        assert_held(self.root, "Store.clean_temp")
        for tmp in self.root.rglob(f"{TMP_PREFIX}*"):
            # training/ belongs to `python -m dynet_ref.train`, which may be writing a checkpoint right now
            if tmp.is_file() and tmp.relative_to(self.root).parts[0] != TRAINING_DIR:
                tmp.unlink()
                removed += 1
        return removed

    @staticmethod
    def _create_view(con: duckdb.DuckDBPyConnection, name: str, files: list[Path], schema: pa.Schema) -> None:
        """A view over `files`, or over an empty table of `schema` when there are none yet."""
        if files:
            listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listing}])")
        else:
            con.register(f"_empty_{name}", schema.empty_table())
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")

    def _run_records(self, command: str) -> Iterator[dict[str, Any]]:
        """The readable run records of `command` (and of commands named like it), latest first."""
        for record in sorted((self.root / "runs").glob(f"*-{command}-*.json"), reverse=True):
            try:
                yield json.loads(record.read_text())
            except (OSError, ValueError):
                continue

    def current_fingerprints(self, command: str) -> list[str]:
        """The fingerprints in force for `command`: per unit (a metric, say), the one of its latest run."""
        found: dict[str, str] = {}
        for run in self._run_records(command):
            for unit, fp in ((run.get("config") or {}).get("fingerprints") or {}).items():
                found.setdefault(unit, fp)
        return list(found.values())

    def latest_configs(self, command: str, per: str) -> dict[Any, dict[str, Any]]:
        """The recorded config of `command`'s latest finished run per value of its stage setting `per`."""
        found: dict[Any, dict[str, Any]] = {}
        for run in self._run_records(command):
            cfg = run.get("config") or {}
            if run.get("command") == command:
                found.setdefault((cfg.get("stage") or {}).get(per), cfg)
        return found

    def _latest_pairs_sql(self) -> str:
        """Per recipe, the pair set its latest finished splits run names; recipes whose latest run names none
        (written before pair sets, or pairs without a run) keep the rows of the fingerprint in force."""
        latest = self.latest_configs("splits", "recipe")
        current = [fp for cfg in latest.values() for fp in (cfg.get("fingerprints") or {}).values()]
        by_fingerprint = LATEST_BY_FINGERPRINT.format(key="recipe", table="pairs", current=_literals(current))
        sets = {recipe: cfg["stage"]["pair_set"] for recipe, cfg in latest.items()
                if (cfg.get("stage") or {}).get("pair_set")}
        if not sets:
            return by_fingerprint
        return (LATEST_PAIR_SETS.format(sets=_literals(sets.values()))
                + f" UNION ALL SELECT * FROM ({by_fingerprint}) WHERE recipe NOT IN ({_literals(sets)})")

    def check_selection(self, name: str | None) -> None:
        """A one-line StoreError when a selection is named that no `filter --name NAME` has written."""
        if name and not (self.root / "selections" / name).is_dir():
            raise StoreError(f"no selection {name!r} in {self.root}/selections; run `million-ird filter --manifest "
                             f"{self.root} --name {name}` first or drop --selection")

    def check_output(self, path: str | Path, option: str = "--out") -> Path:
        """`path` resolved, when writing (or replacing) it cannot touch what the store holds; else a StoreError.

        Outside the store anything goes. Inside it only a path under DIR/export/, or a new .html file at the
        top (the report); never the store itself, a folder above it, or a table, files/, runs/ or inputs/.
        """
        path = Path(path).expanduser().resolve()
        if path == self.root or path in self.root.parents:
            raise StoreError(f"{option} {path} is the store or a folder above it; choose a new folder")
        if self.root not in path.parents:
            return path
        rel = path.relative_to(self.root).parts
        if (rel[0] == EXPORT_DIR and len(rel) > 1) or (len(rel) == 1 and path.suffix == ".html"
                                                          and not path.is_dir()):
            return path
        raise StoreError(f"{option} {path} is inside the store {self.root}, where only {self.root / EXPORT_DIR}/NAME "
                         f"(or a top-level .html report) may be written; choose a path there or outside the store")

    def latest_run(self, command: str) -> str | None:
        """The run_id of `command`'s latest finished run (from its run record), or None."""
        records = sorted((self.root / "runs").glob(f"*-{command}-*.json"))
        return records[-1].stem if records else None

    def check_layout(self) -> None:
        """Refuse part files written by an older layout, saying how to bring the store up to date."""
        for table in ("scores", "patches"):
            self._check_schema(table, self.parts(table))

    def _check_schema(self, table: str, files: list[Path]) -> None:
        """Refuse part files written by an older layout of `table`, saying how to bring the store up to date."""
        if table == "scores" and any("metric" not in pq.read_schema(f).names for f in files):
            raise StoreError(f"{self.root}: scores were written by million-ird 0.2 (one column per metric); run "
                             f"`million-ird migrate --manifest {self.root}` once to convert them (nothing is lost)")
        if table == "patches" and any("fingerprint" not in pq.read_schema(f).names for f in files):
            raise StoreError(f"{self.root}: patches were written by million-ird 0.2 (loose PNG files); delete "
                             f"{self.root / 'patches'} and {self.files_dir / 'patches'} and run `million-ird patches` "
                             "again (it writes tar shards now)")

    def connect(self, derive: Iterable[str] = ()) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with views over every table, the latest_* views and `catalog`.

        `catalog_base` and `latest_scores` read their derived file (million_ird.derived) when a current one
        exists; the views named in `derive` get one built first (on big stores). Results are the same."""
        con = duckdb.connect(":memory:")
        files: dict[str, list[Path]] = {}
        for table, schema in SCHEMAS.items():
            files[table] = self.parts(table)
            self._check_schema(table, files[table])
            self._create_view(con, table, files[table], schema)
        self._create_view(con, "selections", sorted((self.root / "selections").glob(f"*/{PART_GLOB}")), SELECTIONS)
        con.execute(f"CREATE VIEW latest_downloads AS {LATEST_DOWNLOADS}")
        derive = set(derive)
        derived.create_view(con, self.root, "catalog_base", CATALOG_BASE, files["images"] + files["downloads"],
                            "catalog_base" in derive, key=LATEST_DOWNLOADS)
        metrics = self._score_views(con, files["scores"], "latest_scores" in derive)
        columns = ", ".join(f's."{m.replace(chr(34), chr(34) * 2)}"' for m in metrics)
        patches = LATEST_BY_FINGERPRINT.format(key="image_id", table="patches",
                                               current=_literals(self.current_fingerprints("patches")))
        con.execute(f"CREATE VIEW latest_patches AS {patches}")
        con.execute(f"CREATE VIEW latest_pairs AS {self._latest_pairs_sql()}")
        con.execute(f"CREATE VIEW latest_duplicates AS {LATEST_DUPLICATES.format(run=_literal(self.latest_run('dedup')))}")
        con.execute(f"CREATE VIEW catalog AS {CATALOG.format(metric_columns=columns)}")
        con.execute(f"CREATE VIEW kept_patches AS {KEPT_PATCHES}")
        return con

    def _score_views(self, con: duckdb.DuckDBPyConnection, files: list[Path], build: bool) -> list[str]:
        """latest_score_values, latest_scores (one column per metric) and the catalog's copy; the metrics."""
        values = SCORE_VALUES.format(current=_literals(self.current_fingerprints("score")))
        con.execute(f"CREATE VIEW _score_values AS {values}")
        con.execute(f"CREATE VIEW latest_score_values AS {LATEST_SCORE_VALUES}")
        metrics = list(PIVOTED_METRICS) + sorted(
            {r[0] for r in con.execute("SELECT DISTINCT metric FROM scores").fetchall()} - set(PIVOTED_METRICS))
        quoted = [(m.replace(chr(39), chr(39) * 2), m.replace('"', '""')) for m in metrics]
        pivot = ", ".join(f"any_value(value) FILTER (WHERE metric = '{lit}') AS \"{ident}\"" for lit, ident in quoted)
        scores_sql = f"SELECT image_id, {pivot} FROM latest_score_values GROUP BY image_id"
        # the SQL of _score_values is part of the key: it carries the fingerprints in force
        if derived.create_view(con, self.root, "latest_scores", scores_sql, files, build, key=values):
            # one row per image already; the GROUP BY lets DuckDB drop the catalog's join when no metric is read
            firsts = ", ".join(f'first("{ident}") AS "{ident}"' for _, ident in quoted)
            con.execute(f"CREATE VIEW _catalog_scores AS SELECT image_id, {firsts} FROM latest_scores GROUP BY image_id")
        else:  # the same values; images with error rows only add all-NULL rows, which a LEFT JOIN never shows
            con.execute(f"CREATE VIEW _catalog_scores AS SELECT image_id, {pivot} FROM _score_values GROUP BY image_id")
        return metrics

    def connect_for(self, sql: str) -> duckdb.DuckDBPyConnection:
        """`connect()` with the derived files that `sql` reads built first (on big stores)."""
        return self.connect(derive=[name for name, used in DERIVE_FOR.items() if used.search(sql)])

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run one SQL statement over the views and return an Arrow table (building the derived files it reads)."""
        with self.connect_for(sql) as con:
            return con.sql(sql, params=params or None).to_arrow_table()

    def download_progress(self) -> DownloadProgress:
        """Counts of images, images with a download outcome, and images with an ok one."""
        images, tried, ok = self.query(DOWNLOAD_PROGRESS).to_pylist()[0].values()
        return DownloadProgress(images=images, tried=tried, ok=ok)

    def save_run(self, command: str, run_id: str, config: Any, stats: dict[str, Any]) -> Path:
        """Record the resolved config, stats and code versions of one command under runs/."""
        cfg = plain(config)
        record = {"command": command, "run_id": run_id, "finished_at": utc_now().isoformat(),
                  "manifest": str(self.root), "config": cfg, "stats": stats, "versions": code_version(),
                  **RUN_CONTEXT}
        return write_json_atomic(record, self.root / "runs" / f"{run_id}.json")
