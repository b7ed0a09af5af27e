"""Hashes stage: the perceptual hash of every downloaded image (full frame + centre box, informative flag).

One row per ok catalog image (or per image of a selection): `phash` and `phash_centre` (63-bit pHashes
stored unchanged in int64, see `million_ird.phash`) and `informative` (false for near-uniform images, which
dedup never groups by hash). An image that cannot be decoded gets one error row (`retryable` false), tried
again only with `--retry-errors`. The fingerprint covers the hash version and every phash setting, so a
change to the hash recomputes every image and a re-run with the same code is a no-op.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import pyarrow as pa

from million_ird import phash
from million_ird.images import ImageError, read_image, resolve
from million_ird.schema import HASHES
from million_ird.stage import Stage, fingerprint_of

log = logging.getLogger(__name__)
PHASH_VERSION = "1"  # bump when phash.py changes the bits it computes for the same settings


def hash_fingerprint() -> str:
    """Fingerprint of the hash values: version and every setting of `million_ird.phash` that changes them."""
    return fingerprint_of("hashes", PHASH_VERSION, phash.CENTRE, phash.STRUCTURE_MIN, phash.THUMB, phash.LOW)


def hash_candidates(selection: str | None = None) -> tuple[str, list[Any]]:
    """SELECT of (image_id, path) of the ok downloaded images, in `selection` if given."""
    sql = "SELECT image_id, path FROM catalog_base WHERE status = 'ok' AND path IS NOT NULL"
    if selection:
        return sql + " AND image_id IN (SELECT image_id FROM selections WHERE selection = ?)", [selection]
    return sql, []


class HashStage(Stage):
    """image rows (image_id, path) -> one hashes row each (or one error row)."""

    name = "hashes"
    table = "hashes"
    needs = ("path",)

    def __init__(self, root: Path, selection: str | None = None, images_per_batch: int = 64) -> None:
        self.root, self.selection = Path(root), selection
        self.batch_size = images_per_batch
        self._fp = hash_fingerprint()

    def candidates_sql(self) -> tuple[str, list[Any]]:
        """See `hash_candidates`."""
        return hash_candidates(self.selection)

    def fingerprints(self) -> dict[str, str]:
        """One unit: the hash version and settings."""
        return {"": self._fp}

    def setup(self) -> None:
        """One OpenCV thread per worker process."""
        cv2.setNumThreads(1)

    def summary_sql(self) -> str:
        """Images hashed by the run, and how many of them are informative."""
        return ("SELECT count(*) FILTER (WHERE error IS NULL) AS hashed, "
                "count(*) FILTER (WHERE informative) AS informative FROM hashes WHERE run_id = ?")

    def _hash(self, image_id: str, path: str) -> dict:
        pixels = read_image(resolve(self.root, path))
        h = phash.hash_image(pixels)
        return {"image_id": image_id, "phash": phash.to_int64(h.phash), "phash_centre": phash.to_int64(h.phash_centre),
                "informative": h.informative, "fingerprint": self._fp}

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Hash every image of the batch; an undecodable one gets an error row."""
        rows = []
        for image_id, path in zip(batch.column("image_id").to_pylist(), batch.column("path").to_pylist(), strict=True):
            try:
                rows.append(self._hash(image_id, path))
            except (ImageError, cv2.error, ValueError) as exc:  # ValueError: a shape phash cannot hash
                log.info("cannot hash %s: %s", image_id, exc)
                rows.append({"image_id": image_id, "fingerprint": self._fp,
                             "error": f"{type(exc).__name__}: {exc}", "retryable": False})
        return pa.RecordBatch.from_pylist(rows, schema=HASHES)
