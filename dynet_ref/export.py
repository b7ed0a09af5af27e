"""Export DyNet (one variant) to ONNX with dynamic batch/height/width and check it with onnxruntime.

`python -m dynet_ref.export --weights CKPT --variant S --onnx out.onnx`
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dynet_ref.model import MULTIPLE, VARIANTS, DyNet

log = logging.getLogger(__name__)

OPSET = 17
INSTALL_HINT = 'pip install -e ".[onnx]" (or pip install million-ird[onnx])'


class MissingExtraError(ImportError):
    """An optional package of the `onnx` extra is not installed (the message says how to install it)."""


def require(*modules: str) -> None:
    """Import `modules` (onnx, onnxruntime) or raise MissingExtraError naming the extra to install."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"ONNX export needs {' and '.join(missing)}, which "
                                f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}")


class PaddedDyNet(nn.Module):
    """Traceable wrapper: always reflect-pad to a multiple of 8 (maybe by 0), run, crop back."""

    def __init__(self, model: DyNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Restore (B, 3, H, W); H and W must each be at least 8 for reflect padding."""
        h, w = image.shape[-2], image.shape[-1]
        ph = (MULTIPLE - h % MULTIPLE) % MULTIPLE
        pw = (MULTIPLE - w % MULTIPLE) % MULTIPLE
        padded = F.pad(image, (0, pw, 0, ph), mode="reflect")
        return self.model.forward_features(padded)[..., :h, :w]


def export_onnx(model: DyNet, path: str | Path, sample_size: tuple[int, int] = (64, 64)) -> Path:
    """Write `model` (at its current variant) as ONNX with dynamic batch, height and width."""
    require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.rand(1, 3, *sample_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes on shape arithmetic
        torch.onnx.export(
            PaddedDyNet(model.eval()),
            (sample,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["restored"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "restored": {0: "batch", 2: "height", 3: "width"},
            },
        )
    return path


def check_onnx(model: DyNet, path: str | Path, size: tuple[int, int] = (45, 61), seed: int = 0) -> float:
    """Max |onnxruntime − PyTorch| on one random image of `size`."""
    require("onnxruntime")
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, *size, generator=gen)
    with torch.no_grad():
        expected = model.eval()(image).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image.numpy()})[0]
    if got.shape != expected.shape:
        raise ValueError(f"{path}: onnxruntime output shape {got.shape} ≠ PyTorch {expected.shape}")
    return float(np.abs(got - expected).max())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dynet_ref.export",
        description="Export DyNet at one depth to ONNX (dynamic batch/H/W, any H,W >= 8) and "
        "compare onnxruntime with PyTorch on a random image. Needs the onnx extra: " + INSTALL_HINT + ".",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="checkpoint (.safetensors/.ckpt/.pth); default: random init",
    )
    parser.add_argument(
        "--variant", choices=sorted(VARIANTS), default="S", help="depth baked into the graph (default S)"
    )
    parser.add_argument("--onnx", required=True, type=Path, help="output .onnx path")
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="base width when there are no weights or they do not say (default 48)",
    )
    parser.add_argument(
        "--check-size",
        type=int,
        nargs=2,
        default=(45, 61),
        metavar=("H", "W"),
        help="image size of the onnxruntime check (default 45 61)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="max abs difference allowed in the check (default 1e-4)"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when the onnxruntime check exceeds the tolerance."""
    from dynet_ref.checkpoints import CheckpointError, load_model

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        require("onnx", *(() if args.no_check else ("onnxruntime",)))  # before the model is built
        if args.weights is not None:
            model = load_model(args.weights, variant=args.variant, width=args.width)
        else:
            model = DyNet(args.variant, width=args.width or 48).eval()
    except (CheckpointError, MissingExtraError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    export_onnx(model, args.onnx)
    print(f"wrote {args.onnx} (DyNet-{args.variant}, width {model.width}, opset {OPSET})")
    if args.no_check:
        return 0
    diff = check_onnx(model, args.onnx, tuple(args.check_size))
    verdict = "ok" if diff <= args.tolerance else "FAILED"
    print(
        f"onnxruntime vs PyTorch max abs diff {diff:.3g} at {args.check_size[0]}x{args.check_size[1]}: {verdict}"
    )
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
