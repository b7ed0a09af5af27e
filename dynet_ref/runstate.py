"""A training stage's run folder: resolved config record, resume checks, checkpoints written atomically.

```
OUT/STAGE/run.json                       resolved config, stream fingerprint, data fingerprint, versions
OUT/STAGE/checkpoints/step-00000100.safetensors   weights (dynet_ref.checkpoints format)
OUT/STAGE/checkpoints/step-00000100.state.pt      optimizer, EMA, RNG, step (torch.load weights_only)
OUT/STAGE/final.safetensors              the weights to use (EMA weights when EMA is on)
OUT/STAGE/log.csv, val.csv, tb/          per-step losses, validation PSNR, TensorBoard events
```
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dynet_ref.checkpoints import (
    CheckpointError,
    config_hash,
    first_line,
    load_into,
    load_state_dict,
    save_checkpoint,
)
from dynet_ref.config import ConfigError
from dynet_ref.model import DyNet
from million_ird.atomic import atomic_path
from million_ird.store import code_version, plain, write_json_atomic

STEP_FILE = re.compile(r"^step-(\d{8})\.safetensors$")


@dataclass(frozen=True)
class Resumed:
    """What a resumed run continues from."""

    step: int
    state: dict[str, Any]


class RunFolder:
    """One stage's output folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ckpt_dir = root / "checkpoints"

    @property
    def record_path(self) -> Path:
        """run.json: what this run is."""
        return self.root / "run.json"

    @property
    def final(self) -> Path:
        """The weights a finished stage leaves."""
        return self.root / "final.safetensors"

    def check_or_record(self, stream: dict[str, Any], record: dict[str, Any]) -> list[str]:
        """Refuse a resume whose stream settings differ; write run.json; return other changed settings."""
        fingerprint = config_hash(stream)
        changed: list[str] = []
        if self.record_path.exists():
            old = json.loads(self.record_path.read_text())
            if old.get("stream_fingerprint") != fingerprint:
                diffs = _differences(old.get("stream", {}), plain(stream))
                raise ConfigError(f"{self.root}: this run was started with other data-stream settings "
                                  f"({'; '.join(diffs[:6]) or 'data index changed'}); re-run with the same settings "
                                  "or pass a new --out")
            changed = _differences(old.get("config", {}), plain(record.get("config", {})))
            record = {**record, "started_at": old.get("started_at", record.get("started_at"))}
        write_json_atomic({**record, "stream": plain(stream), "stream_fingerprint": fingerprint,
                           "versions": code_version()}, self.record_path)
        return changed

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, weights path) of every complete checkpoint, oldest first."""
        if not self.ckpt_dir.is_dir():
            return []
        found = []
        for path in self.ckpt_dir.iterdir():
            match = STEP_FILE.match(path.name)
            if match and path.with_suffix("").with_suffix(".state.pt").exists():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, model: DyNet, state: dict[str, Any], step: int, keep_last: int, meta: dict[str, str]) -> Path:
        """Write weights + state for `step` (state first, weights last: a pair is complete once both exist)."""
        weights = self.ckpt_dir / f"step-{step:08d}.safetensors"
        state_path = weights.with_suffix("").with_suffix(".state.pt")
        with atomic_path(state_path) as tmp:
            torch.save({**state, "step": step}, tmp)
        save_checkpoint(model, weights, config_hash=meta.get("config_hash", ""), extra=meta)
        for _, old in self.checkpoints()[:-max(1, keep_last)]:
            old.with_suffix("").with_suffix(".state.pt").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        return weights

    def resume(self, model: DyNet) -> Resumed | None:
        """Load the newest checkpoint into `model`; None when the run has none."""
        found = self.checkpoints()
        if not found:
            return None
        step, weights = found[-1]
        state_path = weights.with_suffix("").with_suffix(".state.pt")
        load_into(model, load_state_dict(weights), source=str(weights))
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            raise CheckpointError(f"{state_path}: cannot be read ({first_line(err)}); delete this checkpoint pair "
                                  "to resume from the previous one") from err
        return Resumed(step, state)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
