"""dynet_ref.train end to end on a real tiny store: learning, exact resume, DDP equivalence, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dynet_ref import train
from dynet_ref.model import DyNet
from tests.dynet_ref.train_store import TRAIN_ARGS, build_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("train-store") / "store").root


def _run(*args: str) -> int:
    return train.main([*map(str, args)])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _val_psnr(folder: Path) -> dict[int, float]:
    rows = list(csv.DictReader(open(folder / "val.csv")))
    return {int(r["step"]): float(r["psnr"]) for r in rows if r["set"] == "mean"}


def test_tiny_model_overfits_four_pairs(tmp_path: Path) -> None:
    store = build_store(tmp_path / "s", n_pairs=4, tasks=("dehaze",))
    out = tmp_path / "run"
    assert _run("--data", store.root, "--stage", "finetune", "--out", out, *TRAIN_ARGS,
                "--set", "val_holdout=false", "--set", "val_per_task=4", "--set", "val_crop=48",
                "--set", "finetune.steps=100", "--set", "finetune.epochs=null", "--set", "finetune.lr=2e-3",
                "--set", "finetune.warmup_epochs=1", "--set", "finetune.cosine_epochs=0",
                "--set", "val_every=100", "--variant", "S", "--tasks", "dehaze") == 0
    psnr = _val_psnr(out / "finetune")
    assert psnr[100] - psnr[0] >= 3.0, psnr


def test_interrupted_and_resumed_equals_uninterrupted(store_dir: Path, tmp_path: Path) -> None:
    budget = ["--set", "pretrain.steps=6", "--set", "finetune.steps=4", "--set", "finetune.epochs=null",
              "--set", "ema=0.9", "--set", "ckpt_every=2", "--set", "keep_last=2"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run("--data", store_dir, "--out", one, *TRAIN_ARGS, *budget) == 0
    assert _run("--data", store_dir, "--out", two, *TRAIN_ARGS, *budget, "--max-steps", "3") == 0
    assert not (two / "finetune").exists()  # fine-tuning waits for a complete pre-training
    assert _run("--data", store_dir, "--out", two, *TRAIN_ARGS, *budget) == 0
    for stage, last in (("pretrain", 6), ("finetune", 4)):
        a = _weights(one / stage / "checkpoints" / f"step-{last:08d}.safetensors")
        b = _weights(two / stage / "checkpoints" / f"step-{last:08d}.safetensors")
        assert _max_diff(a, b) <= 1e-6, stage
        assert _max_diff(_weights(one / stage / "final.safetensors"), _weights(two / stage / "final.safetensors")) <= 1e-6
    kept = sorted(p.name for p in (two / "pretrain" / "checkpoints").glob("*.safetensors"))
    assert kept == ["step-00000004.safetensors", "step-00000006.safetensors"]  # keep_last=2
    steps = [int(r["step"]) for r in csv.DictReader(open(two / "pretrain" / "log.csv"))]
    assert steps == list(range(1, 7))  # no step logged twice across the interruption
    variants = {r["variant"] for r in csv.DictReader(open(one / "pretrain" / "log.csv"))}
    assert variants == {"S", "L"}  # dynamic pre-training ran both depths


def test_resume_refuses_a_changed_data_stream(store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["--data", store_dir, "--stage", "pretrain", "--out", out, *TRAIN_ARGS, "--set", "pretrain.steps=4"]
    assert _run(*args, "--max-steps", "1") == 0
    record = (out / "pretrain" / "run.json").read_bytes()
    capsys.readouterr()
    assert _run(*args, "--batch-size", "2") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "batch_size" in err and "\n" not in err
    assert (out / "pretrain" / "run.json").read_bytes() == record


def test_two_process_gloo_equals_one_process(store_dir: Path, tmp_path: Path) -> None:
    common = [*TRAIN_ARGS, "--stage", "pretrain", "--set", "pretrain.steps=3", "--set", "val_every=1000",
              "--set", "ckpt_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "dynet_ref.train", "--data", str(store_dir), "--out", str(tmp_path / "ddp"), *common],
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert _run("--data", store_dir, "--out", tmp_path / "single", *common) == 0
    a = _weights(tmp_path / "ddp" / "pretrain" / "final.safetensors")
    b = _weights(tmp_path / "single" / "pretrain" / "final.safetensors")
    assert _max_diff(a, b) <= 1e-5
    assert _max_diff(a, _weights(tmp_path / "single" / "pretrain" / "checkpoints" / "step-00000001.safetensors")) > 1e-4


def _one_line_error(capsys: pytest.CaptureFixture, *args: object) -> str:
    capsys.readouterr()
    assert _run(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    return err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "no such folder" in _one_line_error(capsys, "--data", tmp_path / "missing")
    bare = build_store(tmp_path / "bare", n_pairs=0, tasks=())
    out = tmp_path / "out"
    assert "million-ird splits" in _one_line_error(capsys, "--data", bare.root, "--stage", "finetune", "--out", out,
                                                    *TRAIN_ARGS)
    store = build_store(tmp_path / "s", n_pairs=2)
    wide = tmp_path / "wide.safetensors"
    from dynet_ref.checkpoints import save_checkpoint

    save_checkpoint(DyNet("S", width=16), wide)
    assert "width" in _one_line_error(capsys, "--data", store.root, "--stage", "finetune", "--out", out,
                                      "--init", wide, *TRAIN_ARGS)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    assert "corrupt.safetensors" in _one_line_error(capsys, "--data", store.root, "--stage", "finetune", "--out", out,
                                                    "--init", corrupt, *TRAIN_ARGS)
    assert not out.exists()


def test_corrupt_resume_checkpoint_is_reported_and_kept(store_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["--data", store_dir, "--stage", "pretrain", "--out", out, *TRAIN_ARGS, "--set", "pretrain.steps=3"]
    assert _run(*args, "--max-steps", "1") == 0
    state = out / "pretrain" / "checkpoints" / "step-00000001.state.pt"
    state.write_bytes(b"not a torch file")
    assert "step-00000001.state.pt" in _one_line_error(capsys, *args)
    assert state.read_bytes() == b"not a torch file"


def test_summary_and_run_record(store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert _run("--data", store_dir.parent, "--stage", "pretrain", "--out", out, *TRAIN_ARGS,
                "--set", "pretrain.steps=2") == 0
    printed = capsys.readouterr().out
    assert "pretrain" in printed and "val PSNR" in printed
    record = json.loads((out / "pretrain" / "run.json").read_text())
    assert record["stores"] == [str(store_dir)]  # found by searching the folder above the store
    assert record["config"]["width"] == 8 and record["config"]["pretrain"]["batch_size"] == 4
    assert record["data_fingerprint"] and record["versions"]["million_ird"]
    assert json.loads((out / "summary.json").read_text())["results"][0]["step"] == 2
