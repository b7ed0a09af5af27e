"""Pieces every `million-ird` command module shares: --manifest, one-line errors, the store lock (--wait)."""

from __future__ import annotations

import functools
import inspect
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import click
import typer

from million_ird.lock import LockError, StoreLock, store_lock
from million_ird.store import DownloadProgress, Store, StoreError

Manifest = Annotated[Path, typer.Option("--manifest", "-m", help="Dataset directory (the store).")]
Wait = Annotated[bool, typer.Option("--wait", help="When another writing command holds the store, wait until it "
                                    "ends instead of stopping with exit 2.")]
Command = TypeVar("Command", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit with status `code` (2: bad input or state)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def existing_store(manifest: Path, check_layout: bool = True) -> Store:
    """The store at `manifest`, or a one-line error when there is none yet (or it needs `migrate`)."""
    store = Store(manifest)
    if not store.root.is_dir():
        fail(f"{store.root}: no dataset directory here; run `million-ird ingest --manifest DIR ...` first")
    try:
        if check_layout:
            store.check_layout()
    except StoreError as exc:
        fail(str(exc))
    return store


def downloaded_store(manifest: Path) -> tuple[Store, DownloadProgress]:
    """The store and how far `download` got; a one-line error naming `download` while no image is downloaded."""
    store = existing_store(manifest)
    progress = store.download_progress()
    blocker = progress.blocker(shlex.quote(str(manifest)))
    if blocker:
        fail(blocker)
    return store, progress


def echo_download_note(progress: DownloadProgress, manifest: Path) -> None:
    """Remind the user of images with no download outcome yet (nothing when every image has one)."""
    note = progress.note(shlex.quote(str(manifest)))
    if note:
        typer.echo(note)


def command_line() -> str:
    """The running command as the lock's holder record shows it: `million-ird SUBCOMMAND ARGS`."""
    ctx = click.get_current_context(silent=True)
    names = ctx.command_path.split()[1:] if ctx else []
    if names and names[0] in sys.argv[1:]:  # this process was started for this command: show its arguments
        return shlex.join(["million-ird", *sys.argv[1:]])
    return " ".join(["million-ird", *names])


@contextmanager
def locked_store(manifest: Path, *, wait: bool = False, creates: bool = False) -> Iterator[StoreLock]:
    """Hold the store lock of `manifest` for the block, or stop with the one-line `in use by pid P` error.

    `creates`: the command may create the store (the folder is made first); otherwise a missing
    store is the usual `run ingest first` error. With `wait`, one line says what it waits for.
    """
    root = Path(manifest).resolve()
    if creates:
        root.mkdir(parents=True, exist_ok=True)
    else:
        existing_store(root, check_layout=False)  # the command checks the layout (migrate must not)
    with ExitStack() as stack:
        try:
            lock = stack.enter_context(store_lock(root, wait=wait, on_wait=lambda line: typer.echo(line, err=True),
                                                  command=command_line()))
        except LockError as exc:
            fail(str(exc))
        yield lock


def writes_store(store_of: Callable[[dict[str, Any]], Path] = lambda params: params["manifest"], *,
                 creates: bool = False,
                 reads_only: Callable[[dict[str, Any]], bool] | None = None) -> Callable[[Command], Command]:
    """Decorate a writing command: its whole body runs under the store lock, and it gains `--wait`.

    `store_of(params)` names the store from the command's parameters (it may raise StoreError to
    refuse one); `creates` as in `locked_store`; `reads_only(params)` true runs the body unlocked
    (e.g. `filter --dry-run`), since readers never lock.
    """

    def decorate(fn: Command) -> Command:
        sig = inspect.signature(fn, eval_str=True)
        if "wait" in sig.parameters:
            raise TypeError(f"{fn.__name__} already has a `wait` parameter; writes_store adds --wait itself")

        @functools.wraps(fn)
        def command(**params: Any) -> Any:
            wait = params.pop("wait", False)
            if reads_only is not None and reads_only(params):
                return fn(**params)
            try:
                root = store_of(params)
            except StoreError as exc:
                fail(str(exc))
            with locked_store(root, wait=wait, creates=creates):
                return fn(**params)

        wait_param = inspect.Parameter("wait", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Wait)
        command.__signature__ = sig.replace(parameters=[*sig.parameters.values(), wait_param])  # type: ignore[attr-defined]
        command.__annotations__ = {**{p.name: p.annotation for p in sig.parameters.values()}, "wait": Wait,
                                   "return": sig.return_annotation}
        return command  # type: ignore[return-value]

    return decorate


# options every per-image stage shares (the driver's): one definition, one help text
Workers = Annotated[int, typer.Option(help="Worker processes (local) or workers (Ray); each runs whole batches.")]
Executor = Annotated[str, typer.Option(help="Where batches run: local (this machine's processes) or ray (Ray Data; "
                                       "needs the `ray` extra). Both write the same rows.")]
RayAddress = Annotated[str | None, typer.Option(help="Ray cluster to join (e.g. ray://head:10001) [default: "
                                                "RAY_ADDRESS, else a local Ray started for this run].")]
RetryErrors = Annotated[bool, typer.Option(help="Also redo items whose earlier attempt with this config ended in "
                                           "a final error row (retryable errors are always redone).")]
Limit = Annotated[int | None, typer.Option(min=1, help="Process at most N pending items this run.")]


def driver_config(executor: str, workers: int, ray_address: str | None, retry_errors: bool,
                  limit: int | None, gpus_per_worker: float = 0.0) -> Any:
    """The DriverConfig the shared options describe; a bad option or a missing executor extra is a one-line error."""
    from million_ird.driver import DriverConfig
    from million_ird.executors import ExecutorConfig, check_executor

    try:
        ex = ExecutorConfig(executor=executor, workers=workers, ray_address=ray_address,
                            gpus_per_worker=gpus_per_worker)
    except ValueError as exc:
        fail(str(exc))
    with executor_errors():
        check_executor(ex)  # a missing extra or an unreachable cluster is said before any work, not after it
    return DriverConfig(executor=ex, retry_errors=retry_errors, limit=limit)


@contextmanager
def executor_errors() -> Iterator[None]:
    """Turn what stops an executor (its extra missing, its cluster unreachable, absent GPUs) into exit 2."""
    from million_ird.executors import ExecutorError

    try:
        yield
    except ExecutorError as exc:
        fail(str(exc))


def echo_run(stats: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Print a driver run's summary table, then its most common error reasons."""
    from million_ird.summary import format_table

    reasons = stats.get("error_reasons") or {}
    shown = {k: v for k, v in stats.items() if k not in ("error_reasons", "fingerprints", *skip)}
    typer.echo(format_table([shown]))
    if reasons:
        typer.echo(format_table([{"error": k, "rows": v} for k, v in reasons.items()]))
