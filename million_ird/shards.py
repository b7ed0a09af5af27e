"""Tar shards of encoded patches, written so a reader can seek straight to any member.

A shard is an uncompressed POSIX tar written under a temp name and renamed when closed, so a row never
points into half a shard. For every member the writer records the byte offset of its data and its
length; `million_ird.images.read_image("SHARD.tar#OFFSET+NBYTES")` reads it back without tarfile.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from million_ird.atomic import TMP_PREFIX

BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class Member:
    """Where one member's bytes live: shard (store-relative), member name, byte offset and length."""

    shard: str
    member: str
    byte_offset: int
    nbytes: int


@dataclass
class ShardWriter:
    """Append members to shards under `root / folder`, rolling over at `max_bytes`; `close()` renames them."""

    root: Path
    folder: str
    max_bytes: int
    _tar: tarfile.TarFile | None = None
    _tmp: Path | None = None
    _name: str = ""
    _pending: list[tuple[Path, Path]] = field(default_factory=list)

    def _open(self) -> None:
        self._name = f"{self.folder}/{uuid.uuid4().hex[:16]}.tar"
        final = self.root / self._name
        final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = final.with_name(f"{TMP_PREFIX}{final.name}")
        self._tar = tarfile.open(self._tmp, "w")  # PAX: long member names get an extra header, data stays last
        self._pending.append((self._tmp, final))

    def add(self, member: str, data: bytes) -> Member:
        """Write one member; returns where its bytes are (valid once `close()` has returned)."""
        if self._tar is None or self._tar.offset >= self.max_bytes:
            self._close_current()
            self._open()
        assert self._tar is not None
        info = tarfile.TarInfo(member)
        info.size = len(data)
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // BLOCK) * BLOCK
        return Member(self._name, member, self._tar.offset - padded, len(data))

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            assert self._tmp is not None
            with open(self._tmp, "rb") as fh:
                os.fsync(fh.fileno())
            self._tar = None

    def close(self) -> None:
        """Finish every shard and rename each into place (before any row that points at it is written)."""
        self._close_current()
        for tmp, final in self._pending:
            os.replace(tmp, final)
        self._pending = []

    def abort(self) -> None:
        """Drop the shards of this writer (on an error before `close`)."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending = []
