"""Restore: exact tiling through restore_tensor, output sizes, and the CLI on real image files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from dynet_ref.checkpoints import save_checkpoint
from dynet_ref.model import DyNet
from dynet_ref.restore import main, read_image, restore_tensor, to_tensor, to_uint8


def test_dynet_tiled_restore_matches_whole_and_tile_covering_image_is_identical(tiny: DyNet) -> None:
    x = torch.rand(1, 3, 100, 77, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        whole = tiny(x)
        assert torch.equal(restore_tensor(tiny, x, tile=128), whole)
    tiled = restore_tensor(tiny, x, tile=48)
    assert tiled.shape == x.shape
    assert (tiled - whole).abs().max().item() < 1e-4


def test_tiled_restore_refuses_models_it_cannot_stream() -> None:
    with pytest.raises(TypeError, match="DyNet"):
        restore_tensor(nn.Conv2d(3, 3, 1), torch.rand(1, 3, 64, 64), tile=32)


def test_cli_restores_png_and_jpeg_of_odd_sizes(
    tiny: DyNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(9)
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "a.png"), rng.integers(0, 256, (45, 61, 3), dtype=np.uint8))
    cv2.imwrite(str(inputs / "b.jpg"), rng.integers(0, 256, (33, 20, 3), dtype=np.uint8))
    (inputs / "c.png").write_bytes(b"this is not an image")
    weights = save_checkpoint(tiny, tmp_path / "w.safetensors")
    code = main(
        [
            str(inputs),
            "--weights",
            str(weights),
            "--variant",
            "S",
            "--out",
            str(tmp_path / "out"),
            "--tile",
            "32",
        ]
    )
    assert code == 1, "an unreadable input makes the exit code non-zero"
    assert "c.png" in capsys.readouterr().err
    for name, shape in (("a", (45, 61, 3)), ("b", (33, 20, 3))):
        out = read_image(tmp_path / "out" / f"{name}.png")
        assert out.shape == shape
        src = read_image(next(inputs.glob(f"{name}.*")))
        with torch.no_grad():
            expected = to_uint8(tiny(to_tensor(src)))  # tiled output equals the whole-image output
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert not (tmp_path / "out" / "c.png").exists()


def test_cli_reports_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(tmp_path), "--weights", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "o")])
    assert code == 2 and "no such checkpoint" in capsys.readouterr().err
