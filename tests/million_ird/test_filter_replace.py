"""`filter --name X` never silently replaces selection X; `--replace` swaps a whole new selection in."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from million_ird.cli import app
from million_ird.filter import FilterConfig, exchange_dirs, run_filter
from million_ird.schema import SCORES
from million_ird.store import Store, StoreError

NIQE = {"a": 2.0, "b": 3.5, "c": 4.5, "d": 6.0}  # all 2000x1500, BRISQUE 20


def make_store(root: Path) -> Store:
    store = Store(root)
    store.append("images", pa.Table.from_pylist([{"image_id": k, "source": "web"} for k in NIQE]))
    store.append("downloads", pa.Table.from_pylist(
        [{"image_id": k, "status": "ok", "path": f"files/{k}.png", "width": 2000, "height": 1500, "attempt": 1}
         for k in NIQE]))
    at = datetime(2025, 1, 1, tzinfo=timezone.utc)
    store.append("scores", pa.Table.from_pylist(
        [{"image_id": k, "metric": m, "value": value, "fingerprint": f"hand-{m}", "scored_at": at}
         for k, v in NIQE.items() for m, value in (("niqe", v), ("brisque", 20.0))], schema=SCORES))
    return store


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def ids(store: Store, name: str) -> list[str]:
    sql = "SELECT image_id FROM selections WHERE selection = ? ORDER BY image_id"
    return store.query(sql, [name]).column(0).to_pylist()


def leftovers(store: Store) -> list[str]:
    return sorted(p.name for p in store.root.iterdir() if p.name.startswith(".tmp-"))


def test_existing_selection_is_refused_and_left_byte_identical(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    code, out, err = run("filter", "-m", str(store.root), "--niqe", "5", "--min-side", "1000", "--name", "v1")
    assert code == 0, out + err
    folder = store.root / "selections" / "v1"
    before = files(folder)
    assert ids(store, "v1") == ["a", "b", "c"]
    code, out, err = run("filter", "-m", str(store.root), "--niqe", "3", "--min-side", "1000", "--name", "v1")
    assert code == 2
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: selection 'v1' already exists"), err
    assert str(folder) in errors[0] and "another --name" in errors[0] and "--replace" in errors[0]
    assert files(folder) == before and ids(store, "v1") == ["a", "b", "c"]
    assert leftovers(store) == []
    with pytest.raises(StoreError, match="already exists"):  # the Python API refuses too
        run_filter(store, FilterConfig(niqe=3.0, min_side=1000, name="v1"))
    # a dry run writes nothing, so it may reuse the name; another name is written beside it
    assert run("filter", "-m", str(store.root), "--niqe", "3", "--name", "v1", "--dry-run")[0] == 0
    assert run("filter", "-m", str(store.root), "--niqe", "3", "--min-side", "1000", "--name", "v2")[0] == 0
    assert files(folder) == before and ids(store, "v2") == ["a"]


def test_replace_swaps_in_the_new_selection_whole(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    assert run("filter", "-m", str(store.root), "--niqe", "5", "--min-side", "1000", "--name", "v1")[0] == 0
    old = json.loads((store.root / "selections/v1/selection.json").read_text())
    code, out, err = run("filter", "-m", str(store.root), "--niqe", "3", "--min-side", "1000", "--name", "v1",
                         "--replace")
    assert code == 0, out + err
    assert "replaced the previous selection" in out
    assert ids(store, "v1") == ["a"]  # the new ids only: nothing of the old selection is left
    new = json.loads((store.root / "selections/v1/selection.json").read_text())
    assert new["thresholds"]["niqe"] == "< 3.0" and new["kept"] == 1 and new["run_id"] != old["run_id"]
    assert sorted(p.name for p in (store.root / "selections/v1").iterdir()) == ["part-00000.parquet",
                                                                                "selection.json"]
    assert sorted(p.name for p in (store.root / "selections").iterdir()) == ["v1"]
    assert leftovers(store) == []
    # --replace on a name that does not exist yet simply writes it
    assert run("filter", "-m", str(store.root), "--niqe", "4", "--min-side", "1000", "--name", "v3",
               "--replace")[0] == 0
    assert ids(store, "v3") == ["a", "b"]


def test_exchange_dirs_swaps_real_folders(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "new.txt").write_text("new")
    (b / "old.txt").write_text("old")
    exchange_dirs(a, b)
    assert [p.name for p in b.iterdir()] == ["new.txt"] and [p.name for p in a.iterdir()] == ["old.txt"]


def test_help_explains_replace() -> None:
    code, out, _ = run("filter", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "--replace" in text and "refused unless" in text and "swapped in" in text
