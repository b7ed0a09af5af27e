"""The store lock: one writing command per store at a time, readers never blocked, dead holders never block.

A real second process holds the lock (`python -c` taking `million_ird.lock` and waiting on stdin);
the commands under test run as the real CLI in their own processes.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from curation_helpers import cli, encode

from million_ird.lock import LockError, StoreBusy, is_held, read_holder, store_lock
from million_ird.sources.common import IngestConfig
from million_ird.sources.ingest import IngestInputs, ingest
from million_ird.stages.patches import PatchesConfig, run_patches
from million_ird.store import Store

# argv: ROOT [--fork] [FILE...]; writes each FILE while holding the lock, prints "held PID [CHILD]",
# holds until stdin closes. --fork leaves a forked child (a worker of the holder) sleeping.
HOLDER = """
import os, sys, time
from pathlib import Path
from million_ird.lock import store_lock
root, args = Path(sys.argv[1]), sys.argv[2:]
fork = args[:1] == ["--fork"]
with store_lock(root, command="million-ird score --manifest " + str(root)):
    for name in args[fork:]:
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text("half-written part of a live run")
    child = os.fork() if fork else -1
    if child == 0:
        time.sleep(120)
        os._exit(0)
    print("held", os.getpid(), child, flush=True)
    sys.stdin.read()
"""


class Holder:
    """A live process holding the store lock."""

    def __init__(self, root: Path, *files: Path, fork: bool = False) -> None:
        args = [sys.executable, "-c", HOLDER, str(root), *(["--fork"] if fork else []), *map(str, files)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = _readline(self.proc.stdout, 60)
        assert line.startswith("held"), f"holder did not take the lock: {line!r}"
        _, pid, child = line.split()
        assert int(pid) == self.proc.pid
        self.child = int(child) if int(child) > 0 else None

    def release(self) -> None:
        """Let the holder leave its `with store_lock` block and exit."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL the holder (its forked child, if any, lives on)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.child:
            try:
                os.kill(self.child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe and not pipe.closed:
                pipe.close()


def _readline(pipe, timeout: float) -> str:  # noqa: ANN001 - a text pipe
    ready, _, _ = select.select([pipe], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return pipe.readline().strip()


def _photos(folder: Path, n: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"p{seed}-{i}.png").write_bytes(encode("PNG", 96, 80, seed=seed + i))
    return folder


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def _count(root: Path, table: str) -> int:
    return Store(root).query(f"SELECT count(*) FROM {table}").column(0)[0].as_py()


def _assert_refused(proc: subprocess.CompletedProcess, root: Path, holder: Holder) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {root} is in use by pid {holder.proc.pid} (million-ird score --manifest ")
    assert " since " in lines[0] and lines[0].endswith("; wait for it, or pass --wait"), lines[0]


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """A store with two local images ingested (not downloaded yet)."""
    root = tmp_path / "store"
    ingest(Store(root), IngestInputs(folder=_photos(tmp_path / "local", 2)), IngestConfig(source="local"))
    return root


@pytest.fixture()
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.close()


def test_a_second_writer_stops_with_one_line_naming_the_holder(store: Path, tmp_path: Path,
                                                               holders: list[Holder]) -> None:
    holders.append(holder := Holder(store))
    before = _snapshot(store)
    proc = cli("ingest", "--manifest", str(store), "--folder", str(_photos(tmp_path / "more", 2, seed=10)),
               check=False)
    _assert_refused(proc, store, holder)
    assert _snapshot(store) == before  # nothing written, nothing cleaned, the holder's record untouched
    assert read_holder(store)["pid"] == holder.proc.pid
    for args in (("download",), ("patches",), ("filter", "--name", "x"), ("score",), ("splits", "--recipe", "synthetic")):
        _assert_refused(cli(*args, "--manifest", str(store), check=False), store, holder)
    assert _snapshot(store) == before


def test_readers_neither_lock_nor_block(store: Path, holders: list[Holder]) -> None:
    holders.append(holder := Holder(store))
    started = time.monotonic()
    assert cli("query", "--manifest", str(store), "SELECT count(*) AS n FROM images", "-f", "json").stdout.count('"n": 2')
    assert "local" in cli("stats", "--manifest", str(store)).stdout
    dry = cli("filter", "--manifest", str(store), "--dry-run", check=False)  # reads only: never locks
    assert "in use" not in dry.stderr and "has a niqe score" in dry.stderr  # its own answer: nothing scored yet
    assert "given" not in dry.stderr and "filtering on niqe (--niqe 5" in dry.stderr  # the defaults, not "given"
    assert time.monotonic() - started < 60
    assert holder.proc.poll() is None and read_holder(store)["pid"] == holder.proc.pid
    _assert_refused(cli("download", "--manifest", str(store), check=False), store, holder)  # the lock is in force


def test_wait_blocks_until_the_holder_ends_then_runs(store: Path, tmp_path: Path, holders: list[Holder]) -> None:
    holders.append(holder := Holder(store))
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    waiter = subprocess.Popen([sys.executable, "-m", "million_ird.cli", "ingest", "--manifest", str(store), "--folder",
                               str(_photos(tmp_path / "more", 2, seed=10)), "--wait"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = _readline(waiter.stderr, 60)
        assert line.startswith(f"waiting: {store} is in use by pid {holder.proc.pid} (million-ird score "), line
        time.sleep(1.0)
        assert waiter.poll() is None and _count(store, "images") == 2  # still waiting, nothing written
        holder.release()
        out, err = waiter.communicate(timeout=120)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, out + err
    assert _count(store, "images") == 4
    assert read_holder(store) is None  # released: no stale record


def test_a_killed_holder_never_blocks_and_its_leftovers_are_cleaned(store: Path, holders: list[Holder]) -> None:
    tmp = store / "downloads" / ".tmp-0123abcd-part-dead.parquet"
    work = store / "_work" / "20240101T000000Z-download-dead0" / "out"
    holders.append(holder := Holder(store, tmp, work / "placeholder", fork=True))
    holder.kill()  # its forked worker lives on, and must not keep the store busy
    assert holder.child
    os.kill(holder.child, 0)  # the worker is alive (this raises if not)
    assert read_holder(store)["pid"] == holder.proc.pid  # a dead holder's record stays; the flock does not
    started = time.monotonic()
    out = cli("download", "--manifest", str(store)).stdout
    assert time.monotonic() - started < 120
    assert not tmp.exists() and not work.parent.exists()  # the dead run's temp file and work folder are gone
    assert "ok" in out and _count(store, "downloads") == 2
    assert read_holder(store) is None  # the download took the lock (its record replaced the dead one's), then let go


def test_a_live_holders_temp_files_survive_other_commands(store: Path, holders: list[Holder]) -> None:
    tmp = store / "patches" / ".tmp-0123abcd-part-live.parquet"
    run = store / "_work" / "20240101T000000Z-download-live0" / "out" / "00000.parquet"
    holders.append(holder := Holder(store, tmp, run))
    for args in (("download",), ("patches",)):  # both clean temp files at their start
        _assert_refused(cli(*args, "--manifest", str(store), check=False), store, holder)
    with pytest.raises(StoreBusy, match=f"in use by pid {holder.proc.pid} "):  # the library guards itself too
        run_patches(Store(store), PatchesConfig())
    assert tmp.read_text() == run.read_text() == "half-written part of a live run"
    holder.release()
    assert not is_held(store)


def test_cleaning_needs_the_lock_which_is_reentrant(store: Path) -> None:
    tmp = store / "images" / ".tmp-0123abcd-part-x.parquet"
    tmp.write_text("left by a dead writer")
    with pytest.raises(LockError, match="store lock"):
        Store(store).clean_temp()
    assert tmp.exists()
    with store_lock(store) as outer, store_lock(store) as inner:
        assert outer is inner and inner.depth == 2 and read_holder(store)["pid"] == os.getpid()
        assert Store(store).clean_temp() == 1
    assert not is_held(store) and read_holder(store) is None and not tmp.exists()
