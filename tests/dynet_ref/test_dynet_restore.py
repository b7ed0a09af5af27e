"""Restore: tiled blending, output sizes, and the CLI on real image files."""

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


class LocalNet(nn.Module):
    """A purely local network (receptive radius 3): tiling with overlap >= 12 must be exact."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@pytest.mark.parametrize(
    ("size", "tile", "overlap"), [((256, 256), 128, 32), ((150, 97), 64, 16), ((70, 300), 48, 12)]
)
def test_tiling_blends_exactly_for_a_local_network(size: tuple[int, int], tile: int, overlap: int) -> None:
    net = LocalNet().eval()
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        whole = net(x)
    tiled = restore_tensor(net, x, tile=tile, overlap=overlap)
    assert tiled.shape == x.shape
    assert (tiled - whole).abs().max() < 1e-5


def test_tiling_without_overlap_shows_seams_for_a_local_network() -> None:
    """Guard that the exactness above comes from the overlap: zero overlap must differ at seams."""
    net = LocalNet().eval()
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert (restore_tensor(net, x, tile=64, overlap=0) - net(x)).abs().max() > 1e-3


def test_dynet_tiled_keeps_size_and_tile_covering_image_is_identical(tiny: DyNet) -> None:
    x = torch.rand(1, 3, 100, 77, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        whole = tiny(x)
        assert torch.equal(restore_tensor(tiny, x, tile=128), whole)
        tiled = restore_tensor(tiny, x, tile=48, overlap=16)
    assert tiled.shape == x.shape and torch.isfinite(tiled).all()


def test_bad_overlap_is_refused(tiny: DyNet) -> None:
    with pytest.raises(ValueError, match="overlap"):
        restore_tensor(tiny, torch.rand(1, 3, 64, 64), tile=32, overlap=32)


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
            "--overlap",
            "8",
        ]
    )
    assert code == 1, "an unreadable input makes the exit code non-zero"
    assert "c.png" in capsys.readouterr().err
    for name, shape in (("a", (45, 61, 3)), ("b", (33, 20, 3))):
        out = read_image(tmp_path / "out" / f"{name}.png")
        assert out.shape == shape
        src = read_image(next(inputs.glob(f"{name}.*")))
        expected = to_uint8(restore_tensor(tiny, to_tensor(src), tile=32, overlap=8))
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert not (tmp_path / "out" / "c.png").exists()


def test_cli_reports_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(tmp_path), "--weights", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "o")])
    assert code == 2 and "no such checkpoint" in capsys.readouterr().err
