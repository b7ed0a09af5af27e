"""NIMA architecture: loading a weights file in our layout, batching, key remapping, layout errors.

The weights here are random: the outputs only test plumbing and are not quality scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from iqa_helpers import natural
from safetensors.torch import save_file

from million_ird import iqa
from million_ird.iqa import nima


@pytest.mark.slow
def test_random_weights_load_and_batching_is_consistent(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nima.build_nima()
    path = tmp_path / "nima_inception_resnet_v2.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    imgs = [natural("astronaut"), natural("coffee"), natural("camera")]
    m = iqa.get("nima", iqa.MetricOptions(nima_weights=str(path), batch_size=2))
    batched = m.score_batch(imgs)
    single = [m.score(im) for im in imgs]
    assert np.allclose(batched, single, atol=1e-4)
    assert all(1.0 <= v <= 10.0 for v in batched)
    assert len(set(np.round(batched, 6))) == 3  # the three inputs do reach the network
    assert m.params_sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def test_pyiqa_layout_is_renamed() -> None:
    state = {"base_model.conv2d_1a.conv.weight": 1, "classifier.0.weight": 2, "module.head.bias": 3}
    assert nima.remap_keys(state) == {"backbone.conv2d_1a.conv.weight": 1, "head.weight": 2, "head.bias": 3}


def test_missing_weights_say_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nima.ENV_DIR, str(tmp_path))
    with pytest.raises(nima.NimaUnavailable, match="--nima-weights"):
        nima.resolve_weights(None)
    (tmp_path / nima.FILE_STEMS[0]).write_bytes(b"x")
    assert nima.resolve_weights(None) == tmp_path / nima.FILE_STEMS[0]
    with pytest.raises(nima.NimaUnavailable, match="does not exist"):
        nima.resolve_weights(str(tmp_path / "nope.pth"))


@pytest.mark.slow
def test_wrong_layout_is_an_error_naming_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    save_file({"something.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="something.weight"):
        iqa.get("nima", iqa.MetricOptions(nima_weights=str(path))).setup()
