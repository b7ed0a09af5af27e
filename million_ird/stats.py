"""Store statistics: rows per source and status, bytes, megapixels, declared vs real resolution."""

from __future__ import annotations

from million_ird.store import Store

STATS_SQL = """
SELECT source,
       count(*) AS images,
       count(*) FILTER (WHERE status = 'ok') AS ok,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status IS NULL) AS pending,
       coalesce(sum(bytes) FILTER (WHERE status = 'ok'), 0)::BIGINT AS bytes,
       round(coalesce(sum(width * height) FILTER (WHERE status = 'ok'), 0) / 1e6, 1)::DOUBLE AS megapixels,
       round(median(least(width, height)) FILTER (WHERE status = 'ok'), 0)::BIGINT AS median_min_side,
       count(*) FILTER (WHERE status = 'ok' AND declared_width IS NOT NULL
                        AND (declared_width <> width OR declared_height <> height)) AS size_mismatch,
       count(*) FILTER (WHERE status = 'ok' AND least(width, height) >= 1024) AS ok_min_side_1024
FROM catalog_base GROUP BY source
ORDER BY source
"""


def store_stats(store: Store) -> dict:
    """Per-source counts plus a total row and the failure reasons."""
    with store.connect(derive=("catalog_base",)) as con:  # the catalog's download columns; no scores needed
        per_source = con.sql(STATS_SQL).to_arrow_table().to_pylist()
        errors = con.sql("SELECT error, count(*) AS n FROM catalog_base WHERE status = 'failed' "
                         "GROUP BY error ORDER BY n DESC LIMIT 10").to_arrow_table().to_pylist()
        rejected = con.sql("SELECT count(*) FROM rejected").fetchall()[0][0]
    total = {"source": "TOTAL"}
    for key in ("images", "ok", "failed", "pending", "bytes", "megapixels", "size_mismatch", "ok_min_side_1024"):
        total[key] = sum(r[key] or 0 for r in per_source)
    return {"sources": per_source, "total": total, "top_errors": errors, "rejected_at_ingest": rejected}
