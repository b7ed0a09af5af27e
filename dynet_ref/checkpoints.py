"""DyNet checkpoints: our safetensors files (with JSON metadata) and the reference Lightning `.ckpt`.

* `save_checkpoint(model, path)` writes `path` (safetensors) whose header metadata holds
  {"dynet_ref": JSON with format, variant, width, config_hash, extra}.
* `load_state_dict(path)` reads a safetensors file, a Lightning `.ckpt` (keys prefixed with
  `net.`, loaded with `torch.load(weights_only=True)`) or a plain `.pth` state dict.
* `load_into(model, state)` refuses missing, unexpected or wrongly shaped tensors with one error
  that lists them all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from dynet_ref.model import DyNet, ReuseSpec
from million_ird.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT = "dynet_ref/1"
META_KEY = "dynet_ref"
LIGHTNING_PREFIX = "net."
SAFETENSORS_SUFFIXES = (".safetensors", ".st")
_LIST_AT_MOST = 12


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """What our checkpoints record next to the weights."""

    variant: str
    width: int
    config_hash: str = ""
    extra: tuple[tuple[str, str], ...] = ()
    format: str = FORMAT


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (torch's are many lines long)."""
    return next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)


def config_hash(config: object) -> str:
    """Short sha256 of a (dataclass or JSON-able) training config, stable across runs."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(
    model: DyNet, path: str | Path, config_hash: str = "", extra: Mapping[str, str] | None = None
) -> Path:
    """Write the model's weights and metadata to a safetensors file; returns the path."""
    path = Path(path)
    if path.suffix not in SAFETENSORS_SUFFIXES:
        raise CheckpointError(f"{path}: our checkpoints are safetensors; name it *.safetensors")
    meta = CheckpointMeta(model.variant, model.width, config_hash, tuple(sorted((extra or {}).items())))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(dataclasses.asdict(meta))})
    log.info("saved %d tensors to %s", len(tensors), path)
    return path


def read_metadata(path: str | Path) -> CheckpointMeta | None:
    """Metadata of one of our safetensors checkpoints, or None for other files."""
    path = Path(path)
    if path.suffix not in SAFETENSORS_SUFFIXES:
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if raw is None:
        return None
    fields = json.loads(raw)
    fields["extra"] = tuple(tuple(kv) for kv in fields.get("extra", ()))
    return CheckpointMeta(**fields)


def _from_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a Lightning .ckpt or plain .pth with weights_only=True and strip the `net.` prefix."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({first_line(err)}); "
            "re-save only its state_dict, e.g. torch.save({'state_dict': sd}, path)"
        ) from err
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors (expected a 'state_dict' entry)")
    if any(k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {
            k.removeprefix(LIGHTNING_PREFIX): v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)
        }
    return state


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from our safetensors file, a reference Lightning .ckpt or a .pth state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass --weights PATH to an existing file")
    if path.suffix in SAFETENSORS_SUFFIXES:
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    return _from_torch_file(path)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_AT_MOST])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _LIST_AT_MOST else "")


def load_into(model: DyNet, state: Mapping[str, torch.Tensor], source: str = "state dict") -> DyNet:
    """Copy `state` into `model` strictly; one clear error lists every missing/unexpected/misshapen key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if misshapen:
        problems.append(f"wrong shapes (file≠model): {_listing(misshapen)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit DyNet(width={model.width}): "
            + "; ".join(problems)
            + ". Check --width/--variant, or that the file is a DyNet checkpoint."
        )
    model.load_state_dict(dict(state), strict=True)
    return model


def load_model(path: str | Path, variant: ReuseSpec | None = None, width: int | None = None) -> DyNet:
    """Build a DyNet that fits the checkpoint (width from metadata or weights) and load it, in eval mode."""
    state = load_state_dict(path)
    meta = read_metadata(path)
    if width is None:
        if meta is not None:
            width = meta.width
        elif "patch_embed.proj.weight" in state:
            width = int(state["patch_embed.proj.weight"].shape[0])
        else:
            width = 48
    if variant is None:
        variant = meta.variant if meta is not None and meta.variant in ("S", "L") else "S"
    model = DyNet(variant=variant, width=width)
    return load_into(model, state, source=str(path)).eval()
