"""Child process that runs img2dataset on one work folder (run as `python -m million_ird.stages.engine CFG`).

It runs in its own process group and kills that group if its parent dies, so a SIGKILLed
`million-ird download` never leaves img2dataset workers fetching in the background.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time


def _die_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        time.sleep(0.2)


def main(config_path: str) -> None:
    """Call img2dataset.download with originals kept byte-for-byte (no decode, no re-encode)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    with open(config_path) as fh:
        cfg = json.load(fh)
    threading.Thread(target=_die_with_parent, args=(cfg.pop("parent_pid"),), daemon=True).start()
    from img2dataset import download

    download(
        url_list=cfg["input"], input_format="parquet", url_col="url",
        save_additional_columns=["image_id", "attempt"], output_folder=cfg["output"], output_format="files",
        processes_count=cfg["processes"], thread_count=cfg["threads"], timeout=cfg["timeout"], retries=0,
        number_sample_per_shard=cfg["shard_size"], disable_all_reencoding=True, resize_mode="no",
        compute_hash=None, extract_exif=False, enable_wandb=False, incremental_mode="incremental",
        distributor="multiprocessing",
    )


if __name__ == "__main__":
    main(sys.argv[1])
