"""The command line: query formats and read-only guard, stats, --help for every flag, the demo."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer.main
from curation_helpers import cli
from typer.testing import CliRunner

from million_ird import demo
from million_ird.cli import app
from million_ird.httpserver import LocalServer, Response
from million_ird.store import Store


@pytest.fixture(scope="module")
def demo_run(demo_build: tuple[Path, str]) -> tuple[Path, str]:
    out, stdout = demo_build
    for step in ("ingest", "download", "score", "filter", "dedup", "patches", "splits", "export", "report", "stats"):
        assert f"== million-ird {step}" in stdout or f"== {step}" in stdout, step
    return out, stdout


@pytest.fixture(scope="module")
def demo_store(demo_run: tuple[Path, str]) -> Path:
    return demo_run[0]


def test_two_demo_runs_give_the_same_ids_split_and_pairs(demo_store: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    cli("demo", "--out", str(other))  # another folder, another free port
    sql = {"images": "SELECT image_id, url FROM images ORDER BY image_id",
           "downloads": "SELECT image_id, status, error, sha256 FROM downloads ORDER BY image_id",
           "pairs": "SELECT pair_id, split, task, sigma, seed, params FROM pairs ORDER BY pair_id"}
    for table, query in sql.items():
        a, b = Store(demo_store).query(query).to_pylist(), Store(other).query(query).to_pylist()
        assert a == b and a, table
    urls = Store(other).query("SELECT url FROM images WHERE url IS NOT NULL").column(0).to_pylist()
    assert urls and all(u.startswith("http://demo.million-ird.invalid/") for u in urls)
    splits = Store(other).query("SELECT DISTINCT split FROM pairs ORDER BY 1").column(0).to_pylist()
    assert splits == ["test", "train"]


def test_demo_dedups_decontaminates_exports_and_reports(demo_store: Path) -> None:
    store = Store(demo_store)
    rows = store.query("SELECT i.source, i.url, i.path, d.kept, d.reason, d.matched FROM latest_duplicates d "
                       "JOIN images i USING (image_id) ORDER BY d.reason, i.source").to_pylist()
    names = [(Path(r["url"] or r["path"]).name, r["source"], r["kept"], r["reason"]) for r in rows]
    # astronaut and coffee come from both sources (byte copies): the DIV2K copy is kept (--source-priority)
    assert names == [("astronaut.png", "DIV2K", True, "exact"), ("coffee.png", "DIV2K", True, "exact"),
                     ("astronaut.png", "laion-hr", False, "exact"), ("coffee.png", "laion-hr", False, "exact"),
                     ("rocket.jpg", "laion-hr", False, "test-set")]
    assert Path(rows[-1]["matched"]).name == "rocket-half-q75.jpg"
    cut = set(store.query("SELECT DISTINCT image_id FROM latest_patches").column(0).to_pylist())
    dropped = set(store.query("SELECT image_id FROM catalog WHERE duplicate_dropped").column(0).to_pylist())
    assert cut and not cut & dropped
    exported = sorted((demo_store / "export" / "hf" / "data").glob("*.parquet"))
    assert exported and (demo_store / "export" / "hf" / "README.md").is_file()
    assert sum(pq.read_metadata(p).num_rows for p in exported) == len(
        store.query("SELECT patch_id FROM latest_patches WHERE kept"))
    page = (demo_store / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "test-set" in page


def test_demo_copies_train_config_and_names_the_next_step(demo_run: tuple[Path, str]) -> None:
    out, stdout = demo_run
    assert (out / "train.yaml").read_bytes() == (demo.SAMPLE / "train.yaml").read_bytes()
    assert f"Demo store: {out}" in stdout
    assert f"Next: train DyNet on it: python -m dynet_ref.train --data {out}" in stdout
    assert demo.DemoConfig().out == demo.DEFAULT_OUT == demo.SAMPLE / "store" and demo.DEFAULT_OUT.is_absolute()
    command = typer.main.get_command(app).commands["demo"]  # type: ignore[attr-defined]
    out_option = next(p for p in command.params if p.name == "out")
    assert out_option.default is None and "manifests/demo/store" in out_option.help


def test_demo_proxy_answers_only_for_the_demo_host() -> None:
    with LocalServer({"/a.png": Response(b"png", content_type="image/png")}, proxy_hosts=(demo.DEMO_HOST,)) as s:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": s.base_url}))
        assert opener.open(f"http://{demo.DEMO_HOST}/a.png", timeout=5).read() == b"png"
        assert urllib.request.build_opener(urllib.request.ProxyHandler({})).open(s.url("/a.png")).read() == b"png"
        for url in ("http://example.org/a.png", f"http://{demo.DEMO_HOST}.evil.test/a.png"):
            with pytest.raises(urllib.error.HTTPError) as err:
                opener.open(url, timeout=5)
            assert err.value.code == 403
        assert s.hits["/a.png"] == 2


def test_demo_store_has_expected_outcomes(demo_store: Path) -> None:
    rows = json.loads(cli("query", "-m", str(demo_store), "-f", "json",
                          "SELECT source, status, count(*) AS n FROM catalog GROUP BY ALL ORDER BY ALL").stdout)
    assert rows == [{"source": "DIV2K", "status": "ok", "n": 2}, {"source": "laion-hr", "status": "failed", "n": 3},
                    {"source": "laion-hr", "status": "ok", "n": 5}]
    rejected = json.loads(cli("query", "-m", str(demo_store), "-f", "json", "SELECT url FROM rejected ORDER BY url").stdout)
    assert [r["url"] for r in rejected] == ["file:///etc/passwd", "ftp://example.org/a.png"]


def test_query_formats_agree(demo_store: Path) -> None:
    sql = "SELECT image_id, width, height FROM catalog WHERE status = 'ok' ORDER BY image_id"
    as_json = json.loads(cli("query", "-m", str(demo_store), "-f", "json", sql).stdout)
    as_csv = list(csv.DictReader(io.StringIO(cli("query", "-m", str(demo_store), "-f", "csv", sql).stdout)))
    table = cli("query", "-m", str(demo_store), sql).stdout.splitlines()
    assert len(as_json) == len(as_csv) == len(table) - 2 == 7
    assert [(r["image_id"], str(r["width"])) for r in as_json] == [(r["image_id"], r["width"]) for r in as_csv]
    assert table[2].split()[0] == as_json[0]["image_id"]


@pytest.mark.parametrize("sql,message", [
    ("COPY (SELECT 1) TO 'x.csv'", "read-only"),
    ("CREATE TABLE t AS SELECT 1", "read-only"),
    ("SELECT 1; SELECT 2", "exactly one"),
    ("SELECT nope FROM catalog", "SQL: "),
])
def test_query_refuses_writes_and_reports_sql_errors(demo_store: Path, tmp_path: Path, sql: str, message: str) -> None:
    proc = cli("query", "-m", str(demo_store), sql, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "x.csv").exists()


def test_stats_json_matches_catalog(demo_store: Path) -> None:
    stats = json.loads(cli("stats", "-m", str(demo_store), "--json").stdout)
    total = stats["total"]
    assert (total["images"], total["ok"], total["failed"], total["pending"]) == (10, 7, 3, 0)
    paths = json.loads(cli("query", "-m", str(demo_store), "-f", "json",
                           "SELECT path FROM catalog WHERE status = 'ok'").stdout)
    assert total["bytes"] == sum((demo_store / r["path"]).stat().st_size for r in paths)
    assert stats["rejected_at_ingest"] == 2


def test_demo_scores_filters_and_splits(demo_store: Path) -> None:
    scored = json.loads(cli("query", "-m", str(demo_store), "-f", "json",
                            "SELECT count(*) AS n FROM catalog WHERE niqe IS NOT NULL AND brisque IS NOT NULL").stdout)
    assert scored == [{"n": 7}]
    kept = json.loads(cli("query", "-m", str(demo_store), "-f", "json",
                          "SELECT count(*) AS n FROM selections s JOIN catalog c USING (image_id) "
                          "WHERE s.selection = 'demo' AND (c.niqe >= 5 OR c.brisque >= 35)").stdout)
    assert kept == [{"n": 0}]
    tasks = json.loads(cli("query", "-m", str(demo_store), "-f", "json",
                           "SELECT DISTINCT task FROM pairs ORDER BY task").stdout)
    assert [t["task"] for t in tasks] == ["dehaze", "denoise", "derain"]


def test_every_option_has_help() -> None:
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help, name
        for param in command.params:
            if param.param_type_name == "option":
                assert getattr(param, "help", None), f"{name} {param.name} has no help"


def test_help_shows_every_option_text_whole() -> None:
    """What `--help` prints holds each option's help word for word ("[default: X]" included, never eaten as markup)."""
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        shown = "".join(CliRunner().invoke(app, [name, "--help"], terminal_width=100).output.split())  # wraps
        for param in command.params:
            if param.param_type_name == "option" and param.help:
                assert "".join(param.help.split()) in shown, f"`{name} --help` mangles the help of {param.name}"


def test_demo_refuses_to_clobber_a_non_demo_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    proc = cli("demo", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "not a demo store" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_every_step_leaves_a_run_record(demo_store: Path) -> None:
    records = [json.loads(p.read_text()) for p in sorted((demo_store / "runs").glob("*.json"))]
    commands = {r["command"] for r in records}
    assert {"ingest", "download", "score", "filter", "patches", "splits"} <= commands
    for record in records:
        assert record["versions"]["million_ird"] and record["versions"]["img2dataset"]
        assert isinstance(record["config"], dict) and isinstance(record["stats"], dict)
    download = next(r for r in records if r["command"] == "download")
    assert download["config"]["max_pixels"] == 200_000_000 and download["stats"]["ok"] == 7


def test_trainer_and_evaluator_run_on_the_demo_store_found_from_its_folder(demo_store: Path, tmp_path: Path) -> None:
    """The users' command `python -m dynet_ref.train --data manifests/`, shortened by --set, on a demo store."""
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    train = subprocess.run([sys.executable, "-m", "dynet_ref.train", "--data", str(demo_store.parent), "--out", str(out),
                            "--set", "pretrain.steps=3", "--set", "finetune.steps=3", "--set", "finetune.epochs=null"],
                           capture_output=True, text=True, timeout=600, env=env)
    assert train.returncode == 0, train.stderr[-2000:]
    record = json.loads((out / "finetune" / "run.json").read_text())
    assert record["config_sources"][1] == str(demo_store / "train.yaml")  # the store's own settings applied
    assert record["config"]["width"] == 8 and record["init"] == str(out / "pretrain" / "final.safetensors")
    assert "next: python -m dynet_ref.evaluate" in train.stdout
    result = tmp_path / "res.json"
    ev = subprocess.run([sys.executable, "-m", "dynet_ref.evaluate", "--weights", str(out / "finetune" / "final.safetensors"),
                         "--variant", "S,L", "--data", str(demo_store.parent), "--json", str(result)],
                        capture_output=True, text=True, timeout=600, env=env)
    assert ev.returncode == 0, ev.stderr[-2000:]
    scores = json.loads(result.read_text())
    assert set(scores) == {"S", "L"} and {"dehaze", "derain", "denoise:s15"} <= set(scores["L"]["tasks"])
