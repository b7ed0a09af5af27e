"""Complexity counts: the paper's and fvcore's conventions at 224², and a cross-check with torch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dynet_ref.complexity import count, main
from dynet_ref.model import PROMPT_LEN, PROMPT_SIZES, DyNet, prompt_dims


@pytest.mark.parametrize(
    ("variant", "paper_g", "macs_g"), [("L", 242.3545, 132.234), ("S", 166.3791, 90.813)]
)
def test_full_size_counts_match_the_spec(variant: str, paper_g: float, macs_g: float) -> None:
    c = count(variant, 224)
    assert round(c.paper_flops / 1e9, 4) == paper_g
    assert round(c.macs_with_attention / 1e9, 3) == macs_g
    assert c.params == 16_726_031


def test_s_to_l_flop_ratio_is_the_reuse_saving() -> None:
    ratio = count("L", 224).macs_with_attention / count("S", 224).macs_with_attention
    assert 1.4 < ratio < 1.5


def test_conv_and_attention_macs_agree_with_torch_flop_counter() -> None:
    torch.manual_seed(0)
    model = DyNet("L", width=8).eval()
    x = torch.rand(1, 3, 48, 40)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    ours = count("L", (48, 40), width=8)
    # torch also counts the prompt mixing einsum (B·len·C·S² MACs per prompt block), which neither
    # convention counts; interpolation and GELU are not matmuls, so torch leaves them out.
    mix = sum(PROMPT_LEN * d * s * s for d, s in zip(prompt_dims(8), PROMPT_SIZES, strict=True))
    assert counter.get_total_flops() == 2 * (ours.conv_linear_macs + ours.attention_macs + mix)


def test_cli_prints_both_conventions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--size", "224", "--variant", "S"]) == 0
    out = capsys.readouterr().out
    assert "paper FLOPs 166.3791 G" in out and "MACs incl. attention 90.813 G" in out
