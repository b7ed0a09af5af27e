"""Evaluation: torch metrics equal scikit-image's, the evaluate CLI on a real tiny store, paper_table deltas."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import degradations
from benchmarks import paper_table
from dynet_ref.checkpoints import save_checkpoint
from dynet_ref.evaluate import Protocol, evaluate, main
from dynet_ref.index import DataError, find_stores, read_pairs
from dynet_ref.metrics import center_crop_multiple, psnr, rgb_to_y, ssim
from dynet_ref.model import DyNet
from million_ird.schema import PAIRS
from million_ird.stages.splits import pixels_sha256
from million_ird.store import Store

REPO = Path(__file__).resolve().parents[2]
PROGRESS = re.compile(r"^evaluate [SL,]+: +\d+%")  # tqdm's bar on stderr
SHAPES = [(7, 7), (16, 16), (33, 47), (61, 20)]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the tiny model is ~100x slower with 2 threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(shape: tuple[int, int], channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A clean image and a noisy copy, both in [0, 1] with many values at or next to the clip limits."""
    rng = np.random.default_rng(seed)
    clean = np.clip(rng.random((*shape, channels)) * 1.2 - 0.1, 0, 1)
    noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1)
    noisy[0, 0] = 1 - 1e-7
    return clean, noisy


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None]


@pytest.mark.parametrize("shape", SHAPES)
def test_rgb_metrics_equal_skimage(shape: tuple[int, int]) -> None:
    clean, noisy = _pair(shape, 3, sum(shape))
    expected_p = peak_signal_noise_ratio(clean, noisy, data_range=1)
    expected_s = structural_similarity(clean, noisy, channel_axis=-1, data_range=1)
    assert abs(psnr(_t(noisy), _t(clean)).item() - expected_p) < 1e-6
    assert abs(ssim(_t(noisy), _t(clean)).item() - expected_s) < 1e-6


@pytest.mark.parametrize("shape", SHAPES)
def test_y_channel_and_its_metrics_equal_skimage(shape: tuple[int, int]) -> None:
    clean, noisy = _pair(shape, 3, 7 * sum(shape))
    y_clean, y_noisy = rgb_to_y(_t(clean)), rgb_to_y(_t(noisy))
    ref_clean, ref_noisy = rgb2ycbcr(clean)[..., 0] / 255, rgb2ycbcr(noisy)[..., 0] / 255
    assert np.abs(y_clean[0, 0].numpy() - ref_clean).max() < 1e-9
    assert 16 / 255 - 1e-12 <= y_clean.min() and y_clean.max() <= 235 / 255 + 1e-12
    assert abs(psnr(y_noisy, y_clean).item() - peak_signal_noise_ratio(ref_clean, ref_noisy, data_range=1)) < 1e-6
    assert abs(ssim(y_noisy, y_clean).item() - structural_similarity(ref_clean, ref_noisy, data_range=1)) < 1e-6


def test_metrics_are_per_image_in_float64_for_float32_batches() -> None:
    pairs = [_pair((24, 31), 3, s) for s in range(3)]
    clean = torch.cat([_t(c) for c, _ in pairs]).float()
    noisy = torch.cat([_t(n) for _, n in pairs]).float()
    p, s = psnr(noisy, clean), ssim(noisy, clean)
    assert p.shape == s.shape == (3,) and p.dtype == s.dtype == torch.float64
    for i in range(3):
        c64, n64 = clean[i].permute(1, 2, 0).double().numpy(), noisy[i].permute(1, 2, 0).double().numpy()
        assert abs(p[i].item() - peak_signal_noise_ratio(c64, n64, data_range=1)) < 1e-6
        assert abs(s[i].item() - structural_similarity(c64, n64, channel_axis=-1, data_range=1)) < 1e-6
    c255, n255 = (clean[0] * 255).permute(1, 2, 0).double().numpy(), (noisy[0] * 255).permute(1, 2, 0).double().numpy()
    assert abs(psnr(noisy[:1] * 255, clean[:1] * 255, data_range=255).item()
               - peak_signal_noise_ratio(c255, n255, data_range=255)) < 1e-6
    assert abs(ssim(noisy[:1] * 255, clean[:1] * 255, data_range=255).item()
               - structural_similarity(c255, n255, channel_axis=-1, data_range=255)) < 1e-6
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(noisy[..., :6, :], clean[..., :6, :])


def test_center_crop_matches_the_reference_crop_img() -> None:
    img = torch.arange(37 * 45 * 3.0).reshape(1, 3, 37, 45)
    h, w = 37, 45  # the reference: crop_img(image, base=16), on H x W x C
    ch, cw = h % 16, w % 16
    expected = img[..., ch // 2 : h - ch + ch // 2, cw // 2 : w - cw + cw // 2]
    out = center_crop_multiple(img, 16)
    assert out.shape[-2:] == (32, 32) and torch.equal(out, expected)
    aligned = torch.rand(2, 3, 32, 48)
    assert torch.equal(center_crop_multiple(aligned, 16), aligned)
    with pytest.raises(ValueError, match="smaller"):
        center_crop_multiple(img[..., :15, :], 16)


@pytest.mark.gpu
def test_metrics_on_cuda_equal_cpu() -> None:
    clean, noisy = _pair((65, 48), 3, 5)
    for fn in (psnr, ssim):
        assert abs(fn(_t(noisy).cuda(), _t(clean).cuda()).item() - fn(_t(noisy), _t(clean)).item()) < 1e-9


# ---------------------------------------------------------------- a real tiny store and checkpoint


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB uint8 image (gradients + a little texture)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], axis=-1) * 200 + 20
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def _write(path: Path, rgb: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[..., ::-1])
    return str(path)


def _noise_row(pid: str, clean: str, digest: bool) -> dict:
    args = {"sigma": 15.0, "rounding": "truncate"}
    seed = degradations.sample_seed(0, pid, "gaussian_noise")
    params: dict = {"args": args, "source": "bsd68"}
    if digest:
        rgb = cv2.imread(clean)[..., ::-1].copy()
        params["pixels_sha256"] = pixels_sha256(degradations.get("gaussian_noise")(
            rgb, degradations.rng_from_seed(seed), **args)[0])
    return {"pair_id": pid, "recipe": "test", "split": "test", "task": "denoise", "clean": clean,
            "degraded": None, "degradation": "gaussian_noise", "params": json.dumps(params), "seed": seed,
            "sigma": 15.0}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with file-backed derain/dehaze test pairs (one of odd size), two on-the-fly σ15 pairs
    (one with a stored pixel digest) and a train pair that must be ignored."""
    root = tmp_path / "store"
    files = root / "files"
    rng = np.random.default_rng(3)
    rows = []
    for pid, task, source, (h, w) in (("rain-1", "derain", "Rain100L", (40, 56)),
                                      ("haze-1", "dehaze", "SOTS", (37, 45))):
        clean = _image(h, w, len(rows))
        bad = np.clip(clean.astype(int) + rng.integers(-30, 30, clean.shape), 0, 255).astype(np.uint8)
        rows.append({"pair_id": pid, "recipe": "test", "split": "test", "task": task,
                     "clean": _write(files / f"{pid}-clean.png", clean),
                     "degraded": f"files/{pid}-bad.png", "params": json.dumps({"source": source})})
        _write(files / f"{pid}-bad.png", bad)
    for i, digest in ((1, True), (2, False)):
        rows.append(_noise_row(f"bsd-{i}", _write(files / f"bsd-{i}.png", _image(32, 48, 10 + i)), digest))
    rows.append(dict(rows[0], pair_id="train-1", split="train"))
    Store(root).append("pairs", pa.Table.from_pylist(rows, schema=PAIRS))
    return root


@pytest.fixture
def weights(tiny: DyNet, tmp_path: Path) -> Path:
    """The tiny model as our safetensors checkpoint."""
    return save_checkpoint(tiny, tmp_path / "tiny.safetensors")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynet_ref.evaluate", "--threads", "1", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_json_matches_table_and_csv_with_both_variants(store: Path, weights: Path, tmp_path: Path,
                                                           tiny: DyNet) -> None:
    out_json, out_csv = tmp_path / "res.json", tmp_path / "res.csv"
    proc = _cli("--weights", str(weights), "--variant", "S,L", "--data", str(store.parent), "--json",
                str(out_json), "--csv", str(out_csv), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out_json.read_text())
    assert sorted(results) == ["L", "S"]
    sets = ["dehaze:SOTS", "denoise:bsd68:s15", "derain:Rain100L"]
    for variant, res in results.items():
        assert sorted(res["tasks"]) == sets
        assert [res["tasks"][s]["images"] for s in sets] == [1, 2, 1]
        block = proc.stdout.split(f"DyNet-{variant}\n", 1)[1]
        for name, t in res["tasks"].items():
            assert re.search(rf"^{re.escape(name)}\s+{t['psnr']:.2f}\s+{t['ssim']:.4f}\s+{t['images']}$",
                             block, re.M), (name, block)
        avg = res["average"]
        assert re.search(rf"^average over 3 sets\s+{avg['psnr']:.2f}\s+{avg['ssim']:.4f}$", block, re.M)
        assert avg["psnr"] == pytest.approx(statistics.fmean(t["psnr"] for t in res["tasks"].values()))
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["pair_id"] for r in rows} == {"rain-1", "haze-1", "bsd-1", "bsd-2"}
    for r in rows:
        assert r["set"] in sets and r["variant"] in ("S", "L")
    for variant in ("S", "L"):
        for name in sets:
            mine = [r for r in rows if r["variant"] == variant and r["set"] == name]
            for key in ("psnr", "ssim"):
                mean = statistics.fmean(float(r[key]) for r in mine)
                assert mean == pytest.approx(results[variant]["tasks"][name][key], abs=1e-12)
    meta = json.loads((tmp_path / "res.meta.json").read_text())
    assert meta["protocol"]["reference"] and meta["width"] == 8 and not meta["digest_mismatches"]
    for name, info in meta["test_sets"].items():
        assert re.search(rf"^  {re.escape(name)}  {info['pairs']} pairs?  {info['sha256']}$", proc.stdout, re.M)
    assert "reference protocol" in proc.stdout
    # the protocol itself: crop both to 32x32 (odd 37x45 haze pair), clip, skimage on RGB float
    clean = cv2.imread(str(store / "files/haze-1-clean.png"))[..., ::-1] / 255.0
    bad = cv2.imread(str(store / "files/haze-1-bad.png"))[..., ::-1] / 255.0
    crop_c, crop_b = clean[2:34, 6:38], bad[2:34, 6:38]
    with torch.no_grad():
        restored = tiny.set_variant("L")(_t(crop_b).float()).clamp(0, 1)[0].permute(1, 2, 0).double().numpy()
    assert results["L"]["tasks"]["dehaze:SOTS"]["psnr"] == pytest.approx(
        peak_signal_noise_ratio(crop_c, restored, data_range=1), abs=1e-6)
    assert results["L"]["tasks"]["dehaze:SOTS"]["ssim"] == pytest.approx(
        structural_similarity(crop_c, restored, channel_axis=-1, data_range=1), abs=1e-6)


def _json(argv: list[str], path: Path) -> dict:
    assert main([*argv, "--json", str(path), "--device", "cpu"]) == 0
    return json.loads(path.read_text())


def test_lightning_ckpt_gives_the_same_numbers_as_safetensors(store: Path, weights: Path, tiny: DyNet,
                                                              tmp_path: Path) -> None:
    ckpt = tmp_path / "authors.ckpt"
    torch.save({"state_dict": {"net." + k: v for k, v in tiny.state_dict().items()}, "epoch": 3}, ckpt)
    ours = _json(["--weights", str(weights), "--data", str(store)], tmp_path / "a.json")
    theirs = _json(["--weights", str(ckpt), "--data", str(store)], tmp_path / "b.json")
    assert ours == theirs and sorted(ours) == ["L", "S"]
    assert ours["S"]["tasks"] != ours["L"]["tasks"], "S and L must run at different depths"


def test_pad_y_channel_and_sets_change_what_is_scored(store: Path, weights: Path, tmp_path: Path,
                                                      tiny: DyNet) -> None:
    base = ["--weights", str(weights), "--data", str(store), "--variant", "S", "--sets", "dehaze"]
    crop = _json(base, tmp_path / "c.json")["S"]["tasks"]
    pad = _json([*base, "--pad"], tmp_path / "p.json")["S"]["tasks"]
    y = _json([*base, "--y-channel"], tmp_path / "y.json")["S"]["tasks"]
    assert list(crop) == list(pad) == list(y) == ["dehaze:SOTS"]
    clean = cv2.imread(str(store / "files/haze-1-clean.png"))[..., ::-1] / 255.0
    bad = cv2.imread(str(store / "files/haze-1-bad.png"))[..., ::-1] / 255.0
    with torch.no_grad():
        full = tiny(_t(bad).float()).clamp(0, 1)[0].permute(1, 2, 0).double().numpy()
    assert pad["dehaze:SOTS"]["psnr"] == pytest.approx(peak_signal_noise_ratio(clean, full, data_range=1), abs=1e-6)
    assert abs(crop["dehaze:SOTS"]["psnr"] - pad["dehaze:SOTS"]["psnr"]) > 1e-4
    assert abs(y["dehaze:SOTS"]["psnr"] - crop["dehaze:SOTS"]["psnr"]) > 1e-3
    meta = json.loads((tmp_path / "y.meta.json").read_text())
    assert meta["protocol"]["y_channel"] and not meta["protocol"]["reference"]


def test_library_restores_model_state_and_reports_digest_mismatch(store: Path, tiny: DyNet) -> None:
    rows = read_pairs(find_stores(store), "test")
    bad = [r for r in rows if r.pair_id == "bsd-1"][0]
    bad.params["pixels_sha256"] = "0" * 64
    tiny.set_variant("L").train()
    ev = evaluate(tiny, rows, ("S",), Protocol(), "cpu", tile=16, progress=False)
    assert tiny.training and tiny.variant == "L"
    assert ev.digest_mismatches == ("bsd-1",)
    assert {s.set_name for s in ev.scores} == set(ev.test_sets) and len(ev.scores) == 4
    with pytest.raises(DataError, match="listed twice"):
        evaluate(tiny, [*rows, rows[0]], ("S",), progress=False)
    whole = evaluate(tiny, rows, ("S",), Protocol(), "cpu", progress=False)
    for a, b in zip(ev.scores, whole.scores, strict=True):
        assert a.psnr == pytest.approx(b.psnr, abs=1e-4), "tiled scores equal whole-image scores"
    expected = hashlib.sha256()
    for pid in ("bsd-1", "bsd-2"):
        expected.update(f"{pid}\t{_digest_line(store, rows, pid)}\n".encode())
    assert whole.test_sets["denoise:bsd68:s15"] == {"sha256": expected.hexdigest(), "pairs": 2}


def _digest_line(store: Path, rows: list, pid: str) -> str:
    """The content line of an on-the-fly pair: sha256 of the clean file, then the re-derived pixel digest."""
    row = [r for r in rows if r.pair_id == pid][0]
    rgb = cv2.imread(str(row.clean))[..., ::-1].copy()
    out = degradations.get("gaussian_noise")(rgb, degradations.rng_from_seed(row.seed), **row.args)[0]
    return f"{hashlib.sha256(row.clean.read_bytes()).hexdigest()}\tpixels:{pixels_sha256(out)}"


# ---------------------------------------------------------------- errors: one line, exit 2, outputs untouched


def _bad_cases(tmp: Path, store: Path, weights: Path, tiny: DyNet) -> dict[str, tuple[list[str], str]]:
    empty = tmp / "empty"
    Store(empty).append("pairs", pa.Table.from_pylist([dict(
        pair_id="t", recipe="r", split="train", task="derain", clean="x.png", degraded="y.png")]))
    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(weights.read_bytes()[:1000])
    garbage = tmp / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all" * 40)
    foreign = tmp / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, foreign)
    broken = tmp / "broken"
    shutil.copytree(store, broken)
    (broken / "files" / "rain-1-bad.png").write_bytes(b"truncated")
    unknown = tmp / "unknown"
    clean = _write(unknown / "files" / "c.png", _image(32, 32, 0))
    Store(unknown).append("pairs", pa.Table.from_pylist([dict(_noise_row("u-1", clean, False),
                                                              degradation="blur9")], schema=PAIRS))
    data = ["--data", str(store)]
    return {
        "unknown degradation": (["--weights", str(weights), "--data", str(unknown)], "unknown degradation 'blur9'"),
        "corrupt image mid-run": (["--weights", str(weights), "--data", str(broken)], "rain-1-bad.png"),
        "missing store": (["--weights", str(weights), "--data", str(tmp / "nowhere")], "no such folder"),
        "no test pairs": (["--weights", str(weights), "--data", str(empty)], "million-ird splits"),
        "truncated safetensors": (["--weights", str(truncated), *data], "not a readable safetensors"),
        "garbage ckpt": (["--weights", str(garbage), *data], "cannot be read with torch.load"),
        "missing checkpoint": (["--weights", str(tmp / "none.ckpt"), *data], "no such checkpoint"),
        "wrong width": (["--weights", str(weights), "--width", "16", *data], "does not fit DyNet(width=16)"),
        "not a DyNet": (["--weights", str(foreign), *data], "does not fit DyNet"),
        "unknown variant": (["--weights", str(weights), "--variant", "S,XL", *data], "unknown variant XL"),
        "unknown set": (["--weights", str(weights), "--sets", "deblur", *data], "no test set deblur"),
    }


def _error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not tqdm's progress bar (a bar must end its line before an error)."""
    lines = [ln for ln in stderr.strip().split("\n") if ln.strip()]
    return [ln for ln in lines if not all(PROGRESS.match(seg) for seg in ln.split("\r") if seg.strip())]


def test_bad_inputs_give_one_line_exit_2_and_leave_outputs_alone(
        store: Path, weights: Path, tiny: DyNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_csv = tmp_path / "keep.json", tmp_path / "keep.csv"
    out_json.write_bytes(b'{"S": {"tasks": {}, "average": {}}}\n')
    out_csv.write_bytes(b"variant,set\n")
    before = (out_json.read_bytes(), out_csv.read_bytes())
    capsys.readouterr()
    for case, (argv, needle) in _bad_cases(tmp_path, store, weights, tiny).items():
        code = main([*argv, "--json", str(out_json), "--csv", str(out_csv), "--device", "cpu"])
        err = _error_lines(capsys.readouterr().err)
        assert code == 2, case
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (case, err)
        assert (out_json.read_bytes(), out_csv.read_bytes()) == before, case
        assert not (tmp_path / "keep.meta.json").exists(), case


def test_cli_subprocess_error_is_one_line_and_exit_2(tmp_path: Path, weights: Path) -> None:
    proc = _cli("--weights", str(weights), "--data", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --data")


# ---------------------------------------------------------------- paper_table


def test_paper_table_prints_deltas_and_blanks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = {"dehaze:SOTS": {"psnr": 31.00, "ssim": 0.970, "images": 500},
             "derain:Rain100L": {"psnr": 38.50, "ssim": 0.985, "images": 100},
             "denoise:bsd68:s15": {"psnr": 34.00, "ssim": 0.930, "images": 68},
             "denoise:bsd68:s25": {"psnr": 31.40, "ssim": 0.890, "images": 68},
             "denoise:bsd68:s50": {"psnr": 28.10, "ssim": 0.800, "images": 68},
             "denoise:urban100:s15": {"psnr": 99.0, "ssim": 0.999, "images": 100}}
    partial = {k: v for k, v in tasks.items() if k != "derain:Rain100L"}
    results = tmp_path / "ours.json"
    wrong_avg = {"psnr": 40.0, "ssim": 0.5}  # the evaluator's average over all its sets: never shown
    results.write_text(json.dumps({"S": {"tasks": tasks, "average": wrong_avg}, "L": {"tasks": partial,
                                                                                   "average": wrong_avg}}))
    (tmp_path / "ours.meta.json").write_text(json.dumps({"protocol": {"reference": True, "description": "ref"}}))
    assert paper_table.main([str(results), str(tmp_path / "ours.meta.json")]) == 0
    out = capsys.readouterr().out
    s_row = next(ln for ln in out.splitlines() if ln.startswith("ours S"))
    s_delta = out.splitlines()[out.splitlines().index(s_row) + 1]
    assert s_delta.strip().startswith("Δ vs paper DyNet-S")
    assert "-0.51/-0.010" in s_delta  # SOTS: 31.00 − 31.51, 0.970 − 0.980
    assert "+0.39/+0.004" in s_delta  # Rain100L: 38.50 − 38.11
    assert "32.60/0.915" in s_row, "average of exactly the five Table-1 columns (Urban100 left out)"
    l_row = next(ln for ln in out.splitlines() if ln.startswith("ours L"))
    cells = [l_row[30 + 14 * i : 30 + 14 * (i + 1)].strip() for i in range(6)]
    assert cells[1] == "" and cells[5] == "", "missing Rain100L and hence the average are blank, not zero"
    assert cells[0] == "31.00/0.970"
    assert "paper PromptIR" in out and "MoCE-IR" in out and "ours.json: ref" in out
    assert paper_table.our_row({"tasks": tasks})["Average"][0] == pytest.approx((31 + 38.5 + 34 + 31.4 + 28.1) / 5)


def test_paper_table_refuses_a_file_of_another_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"psnr": 30.0}))
    assert paper_table.main([str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
