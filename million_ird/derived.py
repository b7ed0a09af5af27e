"""Derived tables: Parquet copies of costly views (`catalog_base`, `latest_scores`), keyed by their exact inputs.

A derived file holds the rows of one view's SQL over one exact set of part files. Its name carries a
hash of that SQL text (which embeds the fingerprints in force and the metric list) and of every input
part's name, size and mtime, so it is never stale: any new, removed or compacted part, or a new config
in force, changes the key and the view falls back to (or rebuilds) a fresh one. They live in
DIR/.derived/, are written to a temp name, fsynced and renamed (readers see whole files or none), and
any reader may build one without the store lock: two builders of one key write the same rows, and a
writer's `clean_temp` removing a builder's temp file only makes that builder read the plain view.
None is built while another process holds the store lock (its next part would make it stale at once,
and a reader polling a running download would pile up copies); the lock holder itself may build.
Files of other keys are removed once unused for `GRACE_S` (a reader touches the file it uses).
Small stores (inputs under `MIN_BYTES`) never get one: their views are cheap to compute.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path

import duckdb

from million_ird.atomic import atomic_path
from million_ird.lock import is_held, lock_path

log = logging.getLogger(__name__)

DERIVED_DIR = ".derived"
VERSION = "1"  # bump when the layout of a derived file changes without its SQL changing
MIN_BYTES = 16 * 2**20  # inputs below this are read through the plain views
GRACE_S = 900.0  # a derived file of another key unused this long is removed


def derived_key(sql: str, files: list[Path], key: str = "") -> str:
    """A hash of the view's SQL (and `key`: more of what its rows depend on) and of every input part's
    name, size and mtime."""
    h = hashlib.sha256(f"{VERSION}\0{sql}\0{key}\0".encode())
    for f in sorted(files, key=lambda p: (p.parent.name, p.name)):
        st = f.stat()
        h.update(f"{f.parent.name}/{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def derived_path(root: Path, name: str, sql: str, files: list[Path], key: str = "") -> Path:
    """Where the derived file of view `name` over exactly `files` lives (it may not exist)."""
    return root / DERIVED_DIR / f"{name}-{derived_key(sql, files, key)}.parquet"


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def create_view(con: duckdb.DuckDBPyConnection, root: Path, name: str, sql: str, files: list[Path],
                build: bool, key: str = "") -> bool:
    """CREATE VIEW `name`: over its derived file when one is current (built first when `build` and the
    inputs are big), else as `sql`. Returns whether the derived file is used."""
    path = None
    try:
        path = derived_path(root, name, sql, files, key)
        if (not path.exists() and build and files and sum(f.stat().st_size for f in files) >= MIN_BYTES
                and not writer_elsewhere(root)):
            _build(con, root, name, sql, path)
        if path.exists():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_sql_path(path)})")
            _touch(path)
            return True
    except OSError as exc:  # removed under us, read-only store: the plain view
        log.warning("%s: derived %s not used (%s); reading the plain view", root, name, exc)
    except duckdb.Error as exc:  # an unreadable file: removed, so the next reader builds it again
        log.warning("%s: derived %s unreadable (%s); removed, reading the plain view", root, name, exc)
        if path is not None:
            path.unlink(missing_ok=True)
    con.execute(f"DROP VIEW IF EXISTS {name}")
    con.execute(f"CREATE VIEW {name} AS {sql}")
    return False


def _touch(path: Path) -> None:
    """Mark `path` in use (not pruned for GRACE_S); a read-only store keeps its files anyway."""
    try:
        os.utime(path)
    except OSError:
        pass


def writer_elsewhere(root: Path) -> bool:
    """Whether another process holds the store lock right now (a shared, non-blocking probe of its flock)."""
    if is_held(root):
        return False
    try:
        fd = os.open(lock_path(root), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # never locked
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops the probe's shared lock at once
    return False


def _build(con: duckdb.DuckDBPyConnection, root: Path, name: str, sql: str, path: Path) -> None:
    """Write the rows of `sql` to `path` through a temp name (fsynced), then prune old keys of `name`."""
    started = time.perf_counter()
    with atomic_path(path) as tmp:
        con.execute(f"COPY ({sql}) TO {_sql_path(tmp)} (FORMAT parquet, COMPRESSION zstd)")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    log.info("%s: derived %s built in %.1f s", root, path.name, time.perf_counter() - started)
    prune(root, name, keep=path)


def prune(root: Path, name: str, keep: Path | None = None, grace_s: float = GRACE_S) -> int:
    """Remove derived files of view `name` other than `keep` unused for `grace_s`; returns how many."""
    removed = 0
    now = time.time()
    for old in (root / DERIVED_DIR).glob(f"{name}-*.parquet"):
        try:
            if old != keep and now - old.stat().st_mtime > grace_s:
                old.unlink()
                removed += 1
        except FileNotFoundError:  # another reader pruned it first
            continue
    return removed
