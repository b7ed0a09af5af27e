"""What training and evaluation read from dataset stores: kept patches and pair rows, with absolute paths.

`--data PATH` names a store (a folder with `patches/` or `pairs/` part files) or a folder that holds
stores (searched up to three levels down, e.g. `manifests/` finds `manifests/demo/store/`). Several
stores are read as one: rows keep the store they came from and their paths are made absolute. Nothing
is copied: the index is a list of rows pointing at the stores' own files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import degradations
from million_ird.images import ImageError, read_image, to_uint8
from million_ird.store import TRAINING_DIR, Store

MARKERS = ("patches", "pairs", "images")
SEARCH_DEPTH = 3
SKIP_DIRS = {"files", "runs", TRAINING_DIR, "exports", "selections", "_work", "inputs", ".git"}


class DataError(ValueError):
    """The data a command needs is missing or malformed (the message says which command makes it)."""


def is_store(path: Path) -> bool:
    """True when `path` holds at least one table folder of a dataset store."""
    return any((path / m).is_dir() for m in MARKERS)


def find_stores(path: str | Path) -> list[Store]:
    """The store at `path`, or every store under it (depth ≤ 3, sorted); a one-line DataError if none."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"--data {path}: no such folder; pass a dataset store built by `million-ird demo` "
                        "or `million-ird build`, or a folder that holds stores")
    if is_store(root):
        return [Store(root)]
    found: list[Path] = []
    level = [root]
    for _ in range(SEARCH_DEPTH):
        nxt = []
        for folder in level:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in SKIP_DIRS):
                (found if is_store(child) else nxt).append(child)
        level = nxt
    if not found:
        raise DataError(f"--data {path}: no dataset store in this folder or below; run `million-ird demo` "
                        "(it builds manifests/demo/store) or pass --data DIR of a store")
    return [Store(p) for p in found]


@dataclass(frozen=True)
class PatchRow:
    """One kept patch: its id, absolute file path and the path as the store records it."""

    patch_id: str
    path: Path
    ref: str = ""  # relative to the store: the same wherever the store is copied or mounted


@dataclass(frozen=True)
class PairRow:
    """One pair row of a store, paths absolute; `degraded` None means degrade on the fly from the spec."""

    pair_id: str
    split: str
    task: str
    clean: Path
    degraded: Path | None
    degradation: str | None
    seed: int | None
    sigma: float | None
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    clean_ref: str = ""  # `clean` and `degraded` as the store records them (store-relative for its own files)
    degraded_ref: str | None = None

    @property
    def source(self) -> str | None:
        """The benchmark set the pair comes from (Rain100L, SOTS, bsd68, ...), None for synthetic pairs."""
        return self.params.get("source")

    @property
    def set_name(self) -> str:
        """The test set this pair counts towards: task, source and sigma, e.g. 'denoise:bsd68:s15'."""
        parts = [self.task] + ([self.source] if self.source else [])
        if self.sigma is not None:
            parts.append(f"s{self.sigma:g}")
        return ":".join(parts)

    @property
    def args(self) -> dict[str, Any]:
        """Keyword arguments of the on-the-fly degradation."""
        return dict(self.params.get("args", {}))


def _absolute(store: Store, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else store.root / p


# kept patches as shard member references, never of an image the latest dedup run dropped (a duplicate or a
# test-set match), even one cut before dedup ran: the store's `kept_patches` view
PATCH_SQL = "SELECT patch_id, ref AS path FROM kept_patches ORDER BY patch_id"


def read_patches(stores: list[Store]) -> list[PatchRow]:
    """Every kept patch of the stores not dropped by their latest dedup, ordered by (store, patch_id)."""
    rows: list[PatchRow] = []
    for store in stores:
        table = store.query(PATCH_SQL)
        rows += [PatchRow(pid, _absolute(store, p), p)
                 for pid, p in zip(table.column("patch_id").to_pylist(), table.column("path").to_pylist(),
                                   strict=True)]
    return rows


# pairs of one split, never of an image the latest dedup dropped (one dropped after `splits` ran: the params of
# a synthetic pair name its source image; benchmark pairs name none)
PAIR_SQL = ("SELECT pair_id, split, task, clean, degraded, degradation, seed, sigma, params FROM latest_pairs "
            "WHERE split = ? AND coalesce(json_extract_string(params, '$.image_id'), '') NOT IN "
            "(SELECT image_id FROM latest_duplicates WHERE NOT kept) ORDER BY task, pair_id")


def read_pairs(stores: list[Store], split: str, tasks: tuple[str, ...] | None = None) -> list[PairRow]:
    """Pair rows of one split (optionally some tasks) not dropped by their store's latest dedup, ordered by
    (store, task, pair_id)."""
    rows: list[PairRow] = []
    for store in stores:
        table = store.query(PAIR_SQL, [split])
        for r in table.to_pylist():
            if tasks and r["task"] not in tasks:
                continue
            rows.append(PairRow(r["pair_id"], r["split"], r["task"], _absolute(store, r["clean"]),
                                _absolute(store, r["degraded"]) if r["degraded"] else None, r["degradation"],
                                r["seed"], r["sigma"], json.loads(r["params"] or "{}"), r["clean"], r["degraded"]))
    return rows


def fingerprint(items: list[PatchRow] | list[PairRow]) -> str:
    """sha256 of the ids and recorded paths of an index (what a training run's data stream is built on);
    independent of where the store lives, so a moved store resumes."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, PatchRow):
            h.update(f"{item.patch_id}\t{item.ref}\n".encode())
        else:
            h.update(f"{item.pair_id}\t{item.clean_ref}\t{item.degraded_ref}\t{item.degradation}\t{item.seed}\n"
                     .encode())
    return h.hexdigest()


def read_rgb8(path: Path) -> np.ndarray:
    """Decode an image file or shard member to uint8 RGB by million_ird.images' rules (16-bit: round(v/257))."""
    try:
        return np.ascontiguousarray(to_uint8(read_image(path, rgb=True)))
    except ImageError as exc:
        raise DataError(f"{exc}; re-run the command that wrote it (`million-ird patches` or `million-ird splits`)") from exc


def degraded_of(row: PairRow, clean: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """The degraded image of a pair: its file, or its degradation applied with `rng` (default: its stored seed)."""
    if row.degraded is not None:
        return read_rgb8(row.degraded)
    if row.degradation is None or row.seed is None:
        raise DataError(f"pair {row.pair_id}: has neither a degraded file nor a degradation spec; "
                        "re-run `million-ird splits`")
    out, _ = degradations.get(row.degradation)(clean, rng or degradations.rng_from_seed(row.seed), **row.args)
    return out
