"""Whole Arrow batches of a URL source list to candidate `images` rows and `rejected` rows.

The same rows, reasons and errors as the row-wise `million_ird.sources.lists.add_url_row` (the reference
the tests compare against), but column by column: URL checks through one regular expression (the rare
URL it does not vouch for goes through `url_problem`), numbers through Arrow casts (numeric text: each
distinct value once through `float`), `extra` JSON built from Arrow strings (values Arrow would print
differently from Python's `json` — exponents, NaN, control characters, nested types — through `json`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from million_ird.sources.common import (
    CANDIDATES,
    REJECTS,
    IngestConfig,
    IngestError,
    column_flag,
    is_text_type,
    url_ids,
    url_problem,
)

# URLs `url_problem` always accepts as they are (printable ASCII, http(s), a plain host, optional port): no
# whitespace to strip, nothing for urlsplit to refuse, a non-empty hostname
PLAIN_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9._~-]+(:[0-9]*)?([/?#][!-~]*)?$"
ESCAPED = r'[\x00-\x1f"\\]'  # characters json.dumps escapes (control characters, quote, backslash)
INT64_LIMIT = 2.0**63


@dataclass(frozen=True)
class Numbers:
    """One column read as numbers: float64 values (NaN for null/NaN), which rows hold a number, which cannot."""

    values: np.ndarray
    valid: np.ndarray
    bad: np.ndarray


def text(arr: pa.Array) -> pa.Array:
    """A string-like column (dictionary, large, view) as plain `string`."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr if arr.type == pa.string() else pc.cast(arr, pa.string())


def numbers(arr: pa.Array) -> Numbers:
    """A column as Python's `float(value)` reads each cell (text: each distinct value once)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    n = len(arr)
    if is_text_type(arr.type):
        arr = text(arr)
        distinct = pc.unique(arr).to_pylist()
        parsed, failed = np.full(len(distinct), np.nan), np.zeros(len(distinct), bool)
        for i, value in enumerate(distinct):
            if value is None:
                continue
            try:
                parsed[i] = float(value)
            except ValueError:
                failed[i] = True
        index = pc.index_in(arr, value_set=pa.array(distinct, pa.string()), skip_nulls=False)
        index = index.to_numpy(zero_copy_only=False).astype(np.int64)
        values, bad = parsed[index], failed[index]
    elif pa.types.is_null(arr.type):
        values, bad = np.full(n, np.nan), np.zeros(n, bool)
    else:
        floats = pc.cast(arr, pa.float64(), safe=False)  # as float(int): round to nearest
        values, bad = floats.to_numpy(zero_copy_only=False).astype(np.float64), np.zeros(n, bool)
    return Numbers(values=values, valid=~np.isnan(values), bad=bad)


def join(n: int, *parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of `n`-row string arrays and literals (literals as arrays: far faster)."""
    arrays = [pa.repeat(pa.scalar(p, pa.string()), n) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*arrays, "")


def json_values(arr: pa.Array) -> pa.Array:
    """Each cell as `json.dumps(value, default=str, ensure_ascii=False)` writes it (never null)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    kind, n = arr.type, len(arr)
    if pa.types.is_null(kind):
        return pa.repeat(pa.scalar("null"), n)
    if pa.types.is_boolean(kind):
        return pc.fill_null(pc.if_else(arr, "true", "false"), "null")
    if pa.types.is_integer(kind):
        return pc.fill_null(pc.cast(arr, pa.string()), "null")
    if pa.types.is_floating(kind):
        return _json_floats(pc.cast(arr, pa.float64()))
    if is_text_type(kind):
        strings = text(arr)
        odd = pc.fill_null(pc.match_substring_regex(strings, ESCAPED), False)  # through json.dumps
        out = _patch(join(n, '"', pc.fill_null(strings, ""), '"'), odd.to_numpy(zero_copy_only=False), strings)
        return pc.if_else(pc.is_valid(strings), out, "null") if strings.null_count else out
    return pa.array([json.dumps(v, default=str, ensure_ascii=False) for v in arr.to_pylist()], pa.string())


def _json_floats(arr: pa.Array) -> pa.Array:
    """float64 cells as Python's repr: Arrow's shortest digits where both print them without an exponent."""
    strings = pc.cast(arr, pa.string())
    values = pc.fill_null(arr, 1.0).to_numpy(zero_copy_only=False)
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore"):
        plain = (magnitude == 0) | ((magnitude >= 1e-4) & (magnitude < 1e15))
        whole = plain & (values == np.trunc(values))  # "2048" -> "2048.0"
    plain &= ~pc.fill_null(pc.match_substring(strings, "e"), False).to_numpy(zero_copy_only=False)
    valid = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    out = pc.fill_null(strings, "null")
    rows = np.flatnonzero(whole & plain & valid)
    if len(rows):
        out = scatter(out, rows, join(len(rows), out.take(pa.array(rows)), ".0"))
    odd = np.flatnonzero(~plain & valid)
    if len(odd):
        out = scatter(out, odd, pa.array([_float_json(v) for v in values[odd].tolist()], pa.string()))
    return out


def _float_json(value: float) -> str:
    """json.dumps of one float: repr, or NaN / Infinity / -Infinity."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _patch(fast: pa.Array, odd: np.ndarray, original: pa.Array) -> pa.Array:
    """`fast`, with the `odd` rows replaced by `json.dumps` of the `original` values."""
    rows = np.flatnonzero(odd)
    if not len(rows):
        return fast
    slow = [json.dumps(v, ensure_ascii=False) for v in original.take(pa.array(rows)).to_pylist()]
    return scatter(fast, rows, pa.array(slow, pa.string()))


def scatter(base: pa.Array, rows: np.ndarray, values: pa.Array) -> pa.Array:
    """`base` with `base[rows[i]] = values[i]`."""
    index = np.arange(len(base), dtype=np.int64)
    index[rows] = len(base) + np.arange(len(rows), dtype=np.int64)
    return pa.concat_arrays([base, values.cast(base.type)]).take(pa.array(index))


def json_objects(batch: pa.RecordBatch, names: list[str]) -> pa.Array:
    """Per row, the JSON object of columns `names` (in order), as `extras_json` writes it; null without names."""
    if not names:
        return pa.nulls(batch.num_rows, pa.string())
    parts: list[pa.Array | str] = []
    for i, name in enumerate(names):
        parts += [("{" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": ",
                  json_values(batch.column(name))]
    return join(batch.num_rows, *parts, "}")


@dataclass(frozen=True)
class UrlColumns:
    """Which input columns hold the URL, sizes, caption and watermark (None: not used)."""

    url: str
    width: str | None = None
    height: str | None = None
    caption: str | None = None
    watermark: str | None = None

    def used(self) -> set[str]:
        """The columns mapped to schema columns (every other one goes to `extra`; the watermark too)."""
        return {c for c in (self.url, self.width, self.height, self.caption) if c}


def check_urls(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Per row, the stripped URL (null when refused) and the reason it is refused (null when accepted)."""
    raw = text(raw)
    plain = pc.fill_null(pc.match_substring_regex(raw, PLAIN_URL), False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(~plain)
    if not len(rows):
        return raw, pa.nulls(len(raw), pa.string())
    problems, cleaned = [], []
    for url in raw.take(pa.array(rows)).to_pylist():
        problem = url_problem(url)
        problems.append(problem)
        cleaned.append(None if problem else url.strip())
    clean = scatter(raw, rows, pa.array(cleaned, pa.string()))
    return clean, scatter(pa.nulls(len(raw), pa.string()), rows, pa.array(problems, pa.string()))


def _sizes(batch: pa.RecordBatch, cols: UrlColumns, origins: pa.Array, ok: np.ndarray, cfg: IngestConfig
           ) -> tuple[pa.Array, pa.Array, Numbers | None, np.ndarray]:
    """Width and height as int64, the watermark as numbers, the rows below --min-side; the first bad cell raises."""
    n = batch.num_rows
    width = numbers(batch.column(cols.width)) if cols.width else None
    height = numbers(batch.column(cols.height)) if cols.height else None
    w, h = _ints(width, n), _ints(height, n)
    small = np.zeros(n, bool)
    if cfg.min_side:
        known = (width.valid if width else np.zeros(n, bool)) & (height.valid if height else np.zeros(n, bool))
        shorter = np.minimum(pc.fill_null(w, 0).to_numpy(), pc.fill_null(h, 0).to_numpy())
        small = ok & ~(known & (shorter >= cfg.min_side))
    mark = numbers(batch.column(cols.watermark)) if cfg.max_watermark is not None and cols.watermark else None
    checks = [(width, cols.width, ok, True), (height, cols.height, ok, True), (mark, cols.watermark, ok & ~small, False)]
    bad = [(num.bad | _out_of_range(num, size)) & where if num else np.zeros(n, bool)
           for num, _, where, size in checks]
    either = bad[0] | bad[1] | bad[2]
    if either.any():
        row = int(np.flatnonzero(either)[0])
        which = next(i for i in range(3) if bad[i][row])
        num, name = checks[which][0], str(checks[which][1])
        value = batch.column(name)[row].as_py()
        origin = origins[row].as_py()
        if which == 2:
            raise IngestError(f"{origin}: column {name!r} holds {value!r}, not a number; "
                              "fix the row or drop --max-watermark")
        what = "not a number" if num.bad[row] else "out of range for a size"
        raise IngestError(f"{origin}: column {name!r} holds {value!r}, {what}; "
                          f"fix the row or point --{column_flag(name)} at the right column")
    return w, h, mark, small


def _out_of_range(num: Numbers, is_size: bool) -> np.ndarray:
    """Sizes that no int64 holds (inf, 1e300); a watermark may be any float."""
    if not is_size:
        return np.zeros(len(num.values), bool)
    with np.errstate(invalid="ignore"):
        return num.valid & ~((num.values < INT64_LIMIT) & (num.values >= -INT64_LIMIT))


def _ints(n: Numbers | None, rows: int) -> pa.Array:
    """Sizes as `int(float(value))` (truncated toward zero), null where unknown."""
    if n is None:
        return pa.nulls(rows, pa.int64())
    fits = n.valid & ~_out_of_range(n, True)
    safe = np.where(fits, n.values, 0.0)
    return pa.array(np.trunc(safe).astype(np.int64), pa.int64(), mask=~fits)


def url_rows(batch: pa.RecordBatch, cols: UrlColumns, cfg: IngestConfig, origins: pa.Array
             ) -> tuple[pa.Table, pa.Table]:
    """Candidate `images` rows (CANDIDATES) and `rejected` rows (REJECTS) of one batch, each in input order."""
    raw = text(batch.column(cols.url))
    clean, problem = check_urls(raw)
    ok = pc.is_valid(clean).to_numpy(zero_copy_only=False)
    w, h, mark, small = _sizes(batch, cols, origins, ok, cfg)
    n = batch.num_rows
    marked = np.zeros(n, bool)
    if mark is not None:
        with np.errstate(invalid="ignore"):
            marked = ok & ~small & mark.valid & (mark.values > cfg.max_watermark)
    reason = problem
    if small.any():
        sizes = join(n, f"below --min-side {cfg.min_side}: declared ", pc.fill_null(pc.cast(w, pa.string()), "None"),
                     "x", pc.fill_null(pc.cast(h, pa.string()), "None"))
        reason = pc.if_else(pa.array(small), sizes, reason)
    if marked.any():
        rows = np.flatnonzero(marked)
        text_ = [f"above --max-watermark {cfg.max_watermark}: pwatermark {v:.3f}" for v in mark.values[rows]]
        reason = scatter(reason, rows, pa.array(text_, pa.string()))
    keep = pa.array(ok & ~small & ~marked)
    rejected_mask = pc.invert(keep)
    rejected = pa.table({"source": pa.repeat(pa.scalar(cfg.source, pa.string()), n),
                         "url": pc.if_else(pa.array(ok), clean, raw), "path": pa.nulls(n, pa.string()),
                         "origin": origins, "reason": reason}, schema=REJECTS).filter(rejected_mask)
    kept = batch.filter(keep)
    urls = clean.filter(keep)
    caption = None
    if cols.caption:
        column = kept.column(cols.caption)
        caption = text(column) if is_text_type(column.type) else pa.array(
            [None if v is None else str(v) for v in column.to_pylist()], pa.string())
    extras = [c for c in batch.schema.names if c not in cols.used()]
    images = pa.table({
        "image_id": pa.array(url_ids(urls), pa.string()),
        "source": pa.repeat(pa.scalar(cfg.source, pa.string()), len(urls)), "url": urls,
        "path": pa.nulls(len(urls), pa.string()), "width": w.filter(keep), "height": h.filter(keep),
        "caption": caption if caption is not None else pa.nulls(len(urls), pa.string()),
        "extra": json_objects(kept, extras), "origin": origins.filter(keep),
    }, schema=CANDIDATES)
    return images, rejected
