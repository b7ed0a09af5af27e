"""One writer per store: an exclusive `flock` on DIR/.lock, plus a JSON record in it of who holds it.

The OS drops an `flock` when its holder dies, however it dies, so a killed writer never blocks the
next one; and while a writer lives, no other writer starts, so whatever temp files or work folders
a writer finds at its start were left by a dead one and are safe to clean. Readers never lock.

Within one process the lock is re-entrant (the demo runs the other commands inside its own lock).
It belongs to the process, not to a thread, and a forked child gives it up: the child closes its
copy of the descriptor at once, so a child outliving a SIGKILLed parent never keeps the store busy.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"
RECORD_TRIES = 40  # a holder writes its record right after locking: re-read for up to ~1 s
RECORD_PAUSE_S = 0.025
SHOWN_COMMAND_CHARS = 160


class LockError(RuntimeError):
    """The store lock could not be taken, or code that needs it runs without it."""


class StoreBusy(LockError):
    """Another process holds the store's lock; `holder` is its record (None when it has none yet)."""

    def __init__(self, root: Path, holder: dict[str, Any] | None) -> None:
        self.root, self.holder = root, holder
        super().__init__(f"{describe(root, holder)}; wait for it, or pass --wait")


@dataclass
class StoreLock:
    """A held lock: the store root, the open lock file and the holder record written into it."""

    root: Path
    fd: int
    record: dict[str, Any]
    depth: int = field(default=1)


_held: dict[Path, StoreLock] = {}
_guard = threading.Lock()  # guards _held and the depths
_acquiring = threading.Lock()  # one thread at a time takes a new lock (so two never race for one store)


def lock_path(root: str | Path) -> Path:
    """The lock file of the store at `root`."""
    return Path(root) / LOCK_NAME


def describe(root: Path, holder: dict[str, Any] | None) -> str:
    """`DIR is in use by pid P (COMMAND) since T`, from a holder record."""
    if not holder:
        return f"{root} is in use by another process (it has not written its record yet)"
    command = str(holder.get("command") or "?")
    if len(command) > SHOWN_COMMAND_CHARS:
        command = command[: SHOWN_COMMAND_CHARS - 3] + "..."
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"{root} is in use by pid {holder.get('pid', '?')}{where} ({command}) since {holder.get('since', '?')}"


def read_holder(root: str | Path) -> dict[str, Any] | None:
    """The record of the last holder of the lock at `root` (None when absent or half-written)."""
    try:
        text = lock_path(root).read_text()
    except OSError:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def default_command() -> str:
    """This process's command line, as the holder record shows it."""
    argv = sys.argv or [""]
    if argv[0] in ("", "-c"):
        return f"{Path(sys.executable).name} -c ..."
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def is_held(root: str | Path) -> bool:
    """Whether this process holds the lock of the store at `root`."""
    return Path(root).resolve() in _held


def assert_held(root: str | Path, what: str) -> None:
    """Refuse to go on unless this process holds the lock of `root` (guards code that deletes leftovers)."""
    if not is_held(root):
        raise LockError(f"{what} must run under the store lock of {root}; wrap it in "
                        "`with million_ird.lock.store_lock(root):`")


def _try_lock(fd: int, root: Path) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        raise LockError(f"cannot lock {lock_path(root)}: {exc}; the store needs a local file system "
                        "with flock support") from exc
    return True


def _busy_holder(fd: int, root: Path) -> dict[str, Any] | None:
    """None when the lock was taken after all; else the holder's record (empty dict if it never came)."""
    for _ in range(RECORD_TRIES):
        if _try_lock(fd, root):
            return None
        holder = read_holder(root)
        if holder:
            return holder
        time.sleep(RECORD_PAUSE_S)
    return {}


def _write_record(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record, indent=1).encode() + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _acquire(root: Path, wait: bool, on_wait: Callable[[str], None] | None, command: str | None) -> StoreLock:
    try:
        fd = os.open(lock_path(root), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LockError(f"cannot open the store lock {lock_path(root)}: {exc}") from exc
    try:
        holder = _busy_holder(fd, root)
        if holder is not None:
            if not wait:
                raise StoreBusy(root, holder or None)
            if on_wait:
                on_wait(f"waiting: {describe(root, holder or None)}")
            fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C still interrupts (PEP 475 runs signal handlers)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or default_command(),
                  "argv": sys.argv, "since": datetime.now().astimezone().isoformat(timespec="seconds")}
        _write_record(fd, record)
    except BaseException:
        os.close(fd)
        raise
    return StoreLock(root=root, fd=fd, record=record)


def _release(lock: StoreLock) -> None:
    try:
        os.ftruncate(lock.fd, 0)  # no stale record while nobody holds the lock
    finally:
        os.close(lock.fd)  # closing the last descriptor releases the flock


@contextmanager
def store_lock(root: str | Path, *, wait: bool = False, on_wait: Callable[[str], None] | None = None,
               command: str | None = None) -> Iterator[StoreLock]:
    """Hold the store's exclusive lock for the block; raise StoreBusy (or, with `wait`, block) when taken.

    `root` must exist. Re-entrant within this process: an inner call only counts. `on_wait` gets one
    line before blocking; `command` is what the record shows [default: this process's command line].
    """
    key = Path(root).resolve()
    with _acquiring:
        with _guard:
            lock = _held.get(key)
            if lock is not None:
                lock.depth += 1
        if lock is None:
            lock = _acquire(key, wait, on_wait, command)
            with _guard:
                _held[key] = lock
    try:
        yield lock
    finally:
        with _guard:
            lock.depth -= 1
            last = lock.depth == 0
            if last:
                del _held[key]
        if last:
            _release(lock)


def _forget_in_child() -> None:
    """After fork: close the child's copies of held lock files (the parent keeps its lock)."""
    global _guard, _acquiring
    _guard, _acquiring = threading.Lock(), threading.Lock()
    for lock in _held.values():
        try:
            os.close(lock.fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)
