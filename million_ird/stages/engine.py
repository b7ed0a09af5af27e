"""Child process that runs img2dataset on one work folder (run as `python -m million_ird.stages.engine CFG`).

It runs in its own process group and kills that group if its parent dies, so a SIGKILLed
`million-ird download` never leaves img2dataset workers fetching in the background.

Every fetch goes through `million_ird.netguard` (non-public addresses and over-large bodies refused):
installed here, and, since img2dataset's workers are spawned processes (or Ray/Spark workers) that
inherit nothing of it, carried to them inside the pickled downloader (`GuardedCall`).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from million_ird.netguard import DEFAULT_MAX_BYTES, GuardedCall, NetGuard, install


def _die_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        time.sleep(0.2)


def guard_downloads(guard: NetGuard) -> None:
    """Install `guard` here and make img2dataset wrap its downloader in GuardedCall (for its workers)."""
    install(guard)
    entry = importlib.import_module("img2dataset.main")  # not `img2dataset.main`: the package rebinds it
    make = getattr(entry, "Downloader", None)
    if make is None:  # never fetch unguarded
        raise RuntimeError("img2dataset.main.Downloader not found: this img2dataset version is not supported")
    if isinstance(make, _GuardedFactory):
        make = make.make
    entry.Downloader = _GuardedFactory(make, guard)


class _GuardedFactory:
    """Builds img2dataset's Downloader and wraps it so the guard travels with it to every worker."""

    def __init__(self, make: Callable[..., Any], guard: NetGuard) -> None:
        self.make, self.guard = make, guard

    def __call__(self, **kwargs: Any) -> GuardedCall:
        return GuardedCall(self.make(**kwargs), self.guard)


def _start_ray(processes: int) -> None:
    import ray

    if not ray.is_initialized():  # RAY_ADDRESS set: join that cluster; else a local one of `processes` CPUs
        ray.init(**({} if os.environ.get("RAY_ADDRESS") else {"num_cpus": processes, "include_dashboard": False}))


def main(config_path: str) -> None:
    """Call img2dataset.download with originals kept byte-for-byte (no decode, no re-encode)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    with open(config_path) as fh:
        cfg = json.load(fh)
    threading.Thread(target=_die_with_parent, args=(cfg.pop("parent_pid"),), daemon=True).start()
    guard_downloads(NetGuard(allow_private=bool(cfg.get("allow_private", False)),
                             max_bytes=int(cfg.get("max_bytes", DEFAULT_MAX_BYTES))))
    distributor = cfg.get("distributor", "multiprocessing")
    if distributor == "ray":
        _start_ray(cfg["processes"])
    from img2dataset import download

    download(
        url_list=cfg["input"], input_format="parquet", url_col="url",
        save_additional_columns=["image_id", "attempt"], output_folder=cfg["output"], output_format="files",
        processes_count=cfg["processes"], thread_count=cfg["threads"], timeout=cfg["timeout"], retries=0,
        number_sample_per_shard=cfg["shard_size"], disable_all_reencoding=True, resize_mode="no",
        compute_hash=None, extract_exif=False, enable_wandb=False, incremental_mode="incremental",
        distributor=distributor,
    )


if __name__ == "__main__":
    main(sys.argv[1])
