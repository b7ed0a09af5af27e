"""Parameter and FLOP counts of DyNet in the two conventions of shared/specs/dynet.md.

* paper FLOPs (calflops' convention, what the DyNet paper calls "GFlops"):
  2 × conv/linear MACs + GELU elements + bilinear-interpolation outputs; the two attention
  matrix products (q·kᵀ and attn·v) are left out. calflops counts an interpolation as the
  product of its target size (H·W, not C·H·W), so that is what is added here; with it the
  224² counts match the paper (L 242.3545 G, S 166.3791 G) to the last printed digit.
* fvcore MACs ("MACs incl. attention"): conv/linear MACs + attention-matmul MACs
  + 4 per bilinear-interpolation output (fvcore's upsample_bilinear2d rule).

Counts come from forward hooks during one pass on the meta device (no memory, no compute).
Run `python -m dynet_ref.complexity --help`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import torch
from torch import nn

from dynet_ref.blocks import MDTA, PromptGenBlock
from dynet_ref.model import REFERENCE_WIDTH, VARIANTS, DyNet, ReuseSpec

log = logging.getLogger(__name__)

FVCORE_BILINEAR_FLOPS = 4


@dataclass(frozen=True)
class Complexity:
    """Raw operation counts of one forward pass."""

    params: int
    conv_linear_macs: int
    attention_macs: int
    gelu_elements: int
    interp_outputs: int
    interp_pixels: int

    @property
    def paper_flops(self) -> int:
        """FLOPs as the paper counts them (2·conv/linear MACs + GELU + interpolation, no attention)."""
        return 2 * self.conv_linear_macs + self.gelu_elements + self.interp_pixels

    @property
    def macs_with_attention(self) -> int:
        """MACs as fvcore counts them (conv/linear + attention matmuls + 4 per interpolated output)."""
        return self.conv_linear_macs + self.attention_macs + FVCORE_BILINEAR_FLOPS * self.interp_outputs


def _hooks(model: nn.Module, tally: dict[str, int]) -> list[torch.utils.hooks.RemovableHandle]:
    """Register counting hooks on every module type that contributes work."""

    def conv(m: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        kh, kw = m.kernel_size
        tally["conv_linear"] += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear(m: nn.Linear, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        tally["conv_linear"] += out.numel() * m.in_features

    def attention(m: MDTA, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        b, c, h, w = inp[0].shape
        tally["attention"] += 2 * b * c * (c // m.num_heads) * h * w  # q·kᵀ and attn·v

    def gelu(_m: nn.GELU, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        tally["gelu"] += inp[0].numel()

    def prompt(_m: PromptGenBlock, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        tally["interp"] += out.numel()  # the interpolated prompt has the block's output shape
        tally["interp_px"] += out.shape[-2] * out.shape[-1]  # calflops: prod(size) per call

    table = {nn.Conv2d: conv, nn.Linear: linear, MDTA: attention, nn.GELU: gelu, PromptGenBlock: prompt}
    handles = []
    for module in model.modules():
        for kind, fn in table.items():
            if type(module) is kind:
                handles.append(module.register_forward_hook(fn))
    return handles


def count(
    variant: ReuseSpec = "L", size: int | tuple[int, int] = 224, width: int = REFERENCE_WIDTH
) -> Complexity:
    """Count parameters and operations of DyNet on one 3×H×W image."""
    h, w = (size, size) if isinstance(size, int) else size
    with torch.device("meta"):
        model = DyNet(variant=variant, width=width).eval()
        image = torch.empty(1, 3, h, w)
    tally = {"conv_linear": 0, "attention": 0, "gelu": 0, "interp": 0, "interp_px": 0}
    handles = _hooks(model, tally)
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    return Complexity(
        params=sum(p.numel() for p in model.parameters()),
        conv_linear_macs=tally["conv_linear"],
        attention_macs=tally["attention"],
        gelu_elements=tally["gelu"],
        interp_outputs=tally["interp"],
        interp_pixels=tally["interp_px"],
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dynet_ref.complexity",
        description="Print DyNet parameters and FLOPs: 'paper' = 2*conv/linear MACs + GELU + "
        "interpolated H*W per call, no attention matmuls (the DyNet paper's GFlops); "
        "'MACs' = conv/linear + attention matmuls + 4/interpolated output (fvcore).",
    )
    parser.add_argument("--size", type=int, default=224, help="square input side in pixels (default 224)")
    parser.add_argument("--height", type=int, default=None, help="input height; overrides --size")
    parser.add_argument("--width-px", type=int, default=None, help="input width in pixels; overrides --size")
    parser.add_argument(
        "--variant",
        action="append",
        choices=sorted(VARIANTS),
        help="variant(s) to count; default both L and S",
    )
    parser.add_argument("--dim", type=int, default=REFERENCE_WIDTH, help="base channel width (default 48)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print one line per variant."""
    args = _parser().parse_args(argv)
    size = (args.height or args.size, args.width_px or args.size)
    for variant in args.variant or ["L", "S"]:
        c = count(variant, size, args.dim)
        print(
            f"DyNet-{variant} {size[0]}x{size[1]}: params {c.params:,} ({c.params / 1e6:.2f} M) | "
            f"paper FLOPs {c.paper_flops / 1e9:.4f} G (no attention) | "
            f"MACs incl. attention {c.macs_with_attention / 1e9:.3f} G | "
            f"attention MACs {c.attention_macs / 1e9:.3f} G"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
