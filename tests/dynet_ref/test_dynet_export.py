"""ONNX export: onnxruntime output equals PyTorch for any size."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynet_ref.checkpoints import save_checkpoint
from dynet_ref.export import check_onnx, export_onnx, main
from dynet_ref.model import DyNet

pytest.importorskip("onnxruntime")


def test_onnx_matches_torch_at_several_sizes(tiny: DyNet, tmp_path: Path) -> None:
    tiny.set_variant("L")
    path = export_onnx(tiny, tmp_path / "l.onnx")
    for size in [(64, 64), (45, 61), (8, 100)]:
        assert check_onnx(tiny, path, size) < 1e-4


def test_onnx_bakes_in_the_variant(tiny: DyNet, tmp_path: Path) -> None:
    path = export_onnx(tiny.set_variant("S"), tmp_path / "s.onnx")
    assert check_onnx(tiny.set_variant("L"), path, (40, 40)) > 1e-4


def test_cli_exports_and_checks(tiny: DyNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = save_checkpoint(tiny, tmp_path / "w.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["--weights", str(weights), "--variant", "S", "--onnx", str(out)]) == 0
    assert out.is_file() and ": ok" in capsys.readouterr().out
