"""Exact tiled inference: streamed global statistics give the untiled output, in small pieces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynet_ref.blocks import GDFN
from dynet_ref.model import DyNet
from dynet_ref.tiled import tiled_forward


@pytest.mark.parametrize("variant", ["S", "L"])
@pytest.mark.parametrize("size", [(256, 256), (250, 190)])
def test_tiled_equals_untiled(tiny: DyNet, variant: str, size: tuple[int, int]) -> None:
    tiny.set_variant(variant)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        whole = tiny(x)
    tiled = tiled_forward(tiny, x, tile=128)
    assert tiled.shape == x.shape
    assert (tiled - whole).abs().max().item() < 1e-4


def test_tiled_is_exact_for_odd_tiles_batches_and_trained_temperatures(tiny: DyNet) -> None:
    """Tiles that do not divide the levels (odd boxes at the latent) and non-unit temperatures."""
    with torch.no_grad():
        for name, param in tiny.named_parameters():
            if name.endswith("temperature"):
                param.uniform_(0.3, 3.0, generator=torch.Generator().manual_seed(len(name)))
    x = torch.rand(2, 3, 123, 77, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        whole = tiny(x)
    for tile in (8, 40):
        assert (tiled_forward(tiny, x, tile=tile) - whole).abs().max().item() < 1e-4


def test_gdfn_expansion_never_exceeds_a_tile_plus_halo(tiny: DyNet) -> None:
    """The memory claim: the GDFN hidden map is only ever built for one tile plus its 1-pixel halo."""
    largest: list[int] = [0]

    def record(_: nn.Module, __: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        largest[0] = max(largest[0], out.shape[-2] * out.shape[-1])

    hooks = [m.project_in.register_forward_hook(record) for m in tiny.modules() if isinstance(m, GDFN)]
    x = torch.rand(1, 3, 128, 96, generator=torch.Generator().manual_seed(13))
    tiled_forward(tiny, x, tile=32)
    assert 0 < largest[0] <= 34 * 34
    with torch.no_grad():
        tiny(x)
    assert largest[0] == 128 * 96, "the untiled forward does build it at full size"
    for hook in hooks:
        hook.remove()


def test_bad_tile_and_model_are_refused(tiny: DyNet) -> None:
    with pytest.raises(ValueError, match="tile=4"):
        tiled_forward(tiny, torch.rand(1, 3, 64, 64), tile=4)
    with pytest.raises(TypeError, match="DyNet"):
        tiled_forward(nn.Identity(), torch.rand(1, 3, 64, 64), tile=32)  # type: ignore[arg-type]
