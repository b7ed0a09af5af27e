"""What every source list shares: URL checks, stable image ids, and the ingest batch they produce."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pyarrow as pa

from million_ird.schema import IMAGES, REJECTED

ID_HEX = 20  # 80-bit ids: collision odds ~1e-12 at 2M rows
# what a source produces: `images` rows before ingest stamps `ingested_at`, `rejected` rows before `run_id`
CANDIDATES = pa.schema([f for f in IMAGES if f.name != "ingested_at"])
REJECTS = pa.schema([f for f in REJECTED if f.name != "run_id"])


class IngestError(ValueError):
    """Bad input for ingest; the message names the file, column or row and the fix."""


@dataclass(frozen=True)
class IngestConfig:
    """How to read one source list and which declared-metadata rows to keep."""

    source: str
    url_col: str | None = None
    width_col: str | None = None
    height_col: str | None = None
    caption_col: str | None = None
    watermark_col: str = "pwatermark"
    min_side: int = 0
    max_watermark: float | None = None


@dataclass
class SourceBatch:
    """Rows read from the inputs, in input order: candidate images plus rejected rows with reasons.

    Row-wise readers append dicts to `images` / `rejected`; columnar readers add whole Arrow tables with
    `add_tables`, which first turns the dicts so far into tables, so the order is kept either way.
    """

    images: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    image_tables: list[pa.Table] = field(default_factory=list)
    rejected_tables: list[pa.Table] = field(default_factory=list)

    def reject(self, source: str, origin: str, reason: str, url: str | None = None,
               path: str | None = None) -> None:
        """Record a row that will never be fetched, with why."""
        self.rejected.append({"source": source, "url": url, "path": path, "origin": origin, "reason": reason})

    def add_tables(self, images: pa.Table, rejected: pa.Table) -> None:
        """Append columnar rows (CANDIDATES and REJECTS schemas) after every row added so far."""
        self._flush()
        self.image_tables.append(images)
        self.rejected_tables.append(rejected)

    def _flush(self) -> None:
        if self.images:
            self.image_tables.append(pa.Table.from_pylist(self.images, schema=CANDIDATES))
        if self.rejected:
            self.rejected_tables.append(pa.Table.from_pylist(self.rejected, schema=REJECTS))
        self.images, self.rejected = [], []

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """Every candidate image row (CANDIDATES) and rejected row (REJECTS) so far, in input order."""
        self._flush()
        images = pa.concat_tables([CANDIDATES.empty_table(), *self.image_tables])
        return images, pa.concat_tables([REJECTS.empty_table(), *self.rejected_tables])


def url_problem(url: object) -> str | None:
    """Why `url` may not be fetched (None when it is a plain http(s) URL with a host)."""
    if not isinstance(url, str) or not url.strip():
        return "empty URL"
    if any(c in url for c in "\r\n\t "):
        return "URL contains whitespace"
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        return f"unparseable URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        scheme = parts.scheme or "none (relative)"
        return f"scheme {scheme!r} is not http(s); only http(s) URLs are fetched"
    if not parts.hostname:
        return "URL has no host"
    return None


def stable_id(*parts: str) -> str:
    """A stable image id: blake2b over the identifying parts (same input, same id)."""
    h = hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=ID_HEX // 2)
    return h.hexdigest()


def url_image_id(url: str) -> str:
    """The id of a remote image: its URL alone, so one URL is one image across sources."""
    return stable_id("url", url.strip())


def url_ids(urls: pa.Array) -> list[str]:
    """`url_image_id` of many URLs (a string array, no nulls) that are already stripped."""
    prefix = hashlib.blake2b(b"url\x00", digest_size=ID_HEX // 2)  # copied per URL: cheaper than a new object
    ids = []
    for data in urls.cast(pa.binary()).to_pylist():
        h = prefix.copy()
        h.update(data)
        ids.append(h.hexdigest())
    return ids


def local_image_id(source: str, relpath: str) -> str:
    """The id of a local file: its source name and path relative to the ingested folder."""
    return stable_id("local", source, relpath.replace("\\", "/"))


def extras_json(row: dict, used: set[str]) -> str | None:
    """Every input column not mapped to a schema column, kept verbatim as JSON."""
    rest = {k: v for k, v in row.items() if k not in used}
    return json.dumps(rest, default=str, ensure_ascii=False) if rest else None


def to_number(value: object, column: str, origin: str, fix: str) -> float | None:
    """A numeric cell as a float (None for null or NaN), or a one-line error naming the row, column and `fix`."""
    if value is None:
        return None
    try:
        number = float(value)  # accepts ints, floats, decimals and numeric strings
    except (TypeError, ValueError):
        raise IngestError(f"{origin}: column {column!r} holds {value!r}, not a number; {fix}") from None
    return None if number != number else number  # NaN: unknown


def to_int(value: object, column: str, origin: str) -> int | None:
    """Declared size as an int, or a one-line error naming the row and column."""
    number = to_number(value, column, origin, f"fix the row or point --{column_flag(column)} at the right column")
    return None if number is None else int(number)


def column_flag(column: str) -> str:
    """The CLI flag that names a column, for error messages."""
    return {"WIDTH": "width-col", "HEIGHT": "height-col"}.get(column.upper(), "width-col/--height-col")


def _value_type(dtype: pa.DataType) -> pa.DataType:
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def is_text_type(dtype: pa.DataType) -> bool:
    """Whether an Arrow column of `dtype` holds strings (plain, large, view or dictionary-encoded)."""
    value = _value_type(dtype)
    return pa.types.is_string(value) or pa.types.is_large_string(value) or pa.types.is_string_view(value)


def is_number_type(dtype: pa.DataType) -> bool:
    """Whether an Arrow column of `dtype` can hold numbers: numeric, text (checked per row) or all-null."""
    value = _value_type(dtype)
    return (pa.types.is_integer(value) or pa.types.is_floating(value) or pa.types.is_decimal(value)
            or pa.types.is_null(value) or is_text_type(value))
