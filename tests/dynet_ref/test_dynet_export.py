"""ONNX export: onnxruntime output equals PyTorch for any size; a plain install gets a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from dynet_ref.checkpoints import save_checkpoint
from dynet_ref.export import check_onnx, export_onnx, main
from dynet_ref.model import DyNet

HAS_ONNX = find_spec("onnx") is not None and find_spec("onnxruntime") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx extra (onnx, onnxruntime)")
ROOT = Path(__file__).resolve().parents[2]


def run_cli_without(blocked: tuple[str, ...], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m dynet_ref.export ARGS` in a fresh interpreter where importing `blocked` fails as if absent."""
    code = ("import runpy, sys\n"
            f"for name in {blocked!r}:\n"
            "    sys.modules[name] = None  # the import system then raises ModuleNotFoundError\n"
            f"sys.argv = ['dynet_ref.export', *{list(args)!r}]\n"
            "runpy.run_module('dynet_ref.export', run_name='__main__', alter_sys=True)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


@pytest.mark.parametrize("blocked,named", [(("onnx",), "onnx,"), (("onnx", "onnxruntime"), "onnx and onnxruntime"),
                                           (("onnxruntime",), "onnxruntime,")])
def test_missing_onnx_extra_is_a_one_line_error(tmp_path: Path, blocked: tuple[str, ...], named: str) -> None:
    proc = run_cli_without(blocked, "--variant", "S", "--width", "8", "--onnx", "m.onnx", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: ONNX export needs ") and f"needs {named}" in lines[0]
    assert 'pip install -e ".[onnx]" (or pip install million-ird[onnx])' in lines[0]
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(find_spec("onnx") is None, reason="needs onnx")
def test_no_check_exports_without_onnxruntime(tmp_path: Path) -> None:
    proc = run_cli_without(("onnxruntime",), "--width", "8", "--onnx", "m.onnx", "--no-check", cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "m.onnx").is_file(), proc.stderr


@needs_onnx
def test_onnx_matches_torch_at_several_sizes(tiny: DyNet, tmp_path: Path) -> None:
    tiny.set_variant("L")
    path = export_onnx(tiny, tmp_path / "l.onnx")
    for size in [(64, 64), (45, 61), (8, 100)]:
        assert check_onnx(tiny, path, size) < 1e-4


@needs_onnx
def test_onnx_bakes_in_the_variant(tiny: DyNet, tmp_path: Path) -> None:
    path = export_onnx(tiny.set_variant("S"), tmp_path / "s.onnx")
    assert check_onnx(tiny.set_variant("L"), path, (40, 40)) > 1e-4


@needs_onnx
def test_cli_exports_and_checks(tiny: DyNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = save_checkpoint(tiny, tmp_path / "w.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["--weights", str(weights), "--variant", "S", "--onnx", str(out)]) == 0
    assert out.is_file() and ": ok" in capsys.readouterr().out
