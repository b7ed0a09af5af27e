"""Checkpoints: safetensors round trip with metadata, Lightning .ckpt import, clear key errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dynet_ref.checkpoints import (
    CheckpointError,
    config_hash,
    load_into,
    load_model,
    load_state_dict,
    read_metadata,
    save_checkpoint,
)
from dynet_ref.model import DyNet


def _same_weights(a: DyNet, b: DyNet) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_round_trip_keeps_weights_and_metadata(
    tiny: DyNet, image: torch.Tensor, tmp_path: Path
) -> None:
    tiny.set_variant("L")
    path = save_checkpoint(
        tiny, tmp_path / "run" / "w.safetensors", config_hash({"lr": 2e-4}), {"epoch": "7"}
    )
    meta = read_metadata(path)
    assert meta is not None and (meta.variant, meta.width, meta.extra) == ("L", 8, (("epoch", "7"),))
    assert meta.config_hash == config_hash({"lr": 2e-4}) != config_hash({"lr": 1e-4})
    loaded = load_model(path)
    assert (loaded.variant, loaded.width) == ("L", 8)
    assert _same_weights(tiny, loaded)
    with torch.no_grad():
        assert torch.equal(loaded(image), tiny(image))


def test_lightning_ckpt_is_imported_with_weights_only(
    tiny: DyNet, image: torch.Tensor, tmp_path: Path
) -> None:
    ckpt = {
        "epoch": 119,
        "global_step": 12345,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": {"net." + k: v.clone() for k, v in tiny.state_dict().items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4}]}],
    }
    path = tmp_path / "epoch=119-step=12345.ckpt"
    torch.save(ckpt, path)
    state = load_state_dict(path)
    assert set(state) == set(tiny.state_dict())
    model = load_model(path, variant="S")
    assert model.width == 8 and _same_weights(model, tiny)


def test_ckpt_with_pickled_objects_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "hparams": Path("x")}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_state_dict(path)


def test_wrong_keys_list_missing_and_unexpected(tiny: DyNet) -> None:
    state = dict(tiny.state_dict())
    state.pop("output.weight")
    state.pop("latent.attn.temperature")
    state["decoder_level4.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_into(DyNet("S", width=8), state, "their.ckpt")
    text = str(err.value)
    assert "their.ckpt" in text
    assert "missing keys: latent.attn.temperature, output.weight" in text
    assert "unexpected keys: decoder_level4.weight" in text


def test_wrong_width_lists_shape_mismatches(tiny: DyNet, tmp_path: Path) -> None:
    path = save_checkpoint(tiny, tmp_path / "w.safetensors")
    with pytest.raises(
        CheckpointError, match=r"wrong shapes .*patch_embed\.proj\.weight \(8, 3, 3, 3\)≠\(16, 3, 3, 3\)"
    ):
        load_model(path, width=16)


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "absent.ckpt")
    with pytest.raises(CheckpointError, match="safetensors"):
        save_checkpoint(DyNet("S", width=8), tmp_path / "w.pt")
