"""DyNet model: reference names/shapes, shared weights across S/L, any size, gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dynet_ref.blocks import MDTA, ChannelLayerNorm
from dynet_ref.model import VARIANTS, DyNet, pad_to_multiple, resolve_reuse

# A copy of shared/specs/dynet_official_state_dict.json, so the check runs where shared/ is absent.
VENDORED = Path(__file__).with_name("reference_state_dict.json")
SHARED = Path(__file__).resolve().parents[3] / "shared" / "specs" / "dynet_official_state_dict.json"


def _spec() -> dict:
    spec = json.loads(VENDORED.read_text())
    if SHARED.is_file():
        assert json.loads(SHARED.read_text()) == spec, f"{VENDORED} is stale; copy {SHARED} over it"
    return spec


def test_full_size_names_and_shapes_match_reference() -> None:
    spec = _spec()
    with torch.device("meta"):
        model = DyNet("L")
    ours = [[name, list(t.shape)] for name, t in model.state_dict().items()]
    theirs = [[name, list(shape)] for name, shape in spec["tensors"]]
    missing = sorted({n for n, _ in theirs} - {n for n, _ in ours})
    extra = sorted({n for n, _ in ours} - {n for n, _ in theirs})
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    assert dict(map(tuple, ((n, tuple(s)) for n, s in ours))) == {n: tuple(s) for n, s in theirs}
    assert len(ours) == spec["num_tensors"] == 182
    assert sum(t.numel() for t in model.state_dict().values()) == spec["num_params"] == 16_726_031


def test_variants_are_reuse_counts_and_bad_ones_are_refused() -> None:
    assert resolve_reuse("L") == (4, 6, 6, 8) and resolve_reuse("s") == (2, 3, 3, 4)
    assert resolve_reuse([1, 2, 3, 4]) == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="variant"):
        resolve_reuse("M")
    with pytest.raises(ValueError, match="four positive"):
        resolve_reuse((1, 0, 1, 1))


@pytest.mark.parametrize("size", [(40, 56), (37, 29), (9, 70), (5, 6)])
def test_any_size_keeps_input_size(tiny: DyNet, size: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for variant in VARIANTS:
            out = tiny.set_variant(variant)(x)
            assert out.shape == x.shape
            assert torch.isfinite(out).all()


def test_odd_size_is_reflect_pad_then_crop(tiny: DyNet) -> None:
    x = torch.rand(1, 3, 37, 29, generator=torch.Generator().manual_seed(3))
    padded = F.pad(x, (0, 3, 0, 3), mode="reflect")
    assert pad_to_multiple(x)[0].shape[-2:] == (40, 32)
    with torch.no_grad():
        assert torch.allclose(tiny(x), tiny.forward_features(padded)[..., :37, :29], atol=1e-6)


def test_s_and_l_share_one_parameter_storage(tiny: DyNet, image: torch.Tensor) -> None:
    before = {n: p.data_ptr() for n, p in tiny.named_parameters()}
    grads = {}
    for variant in ("S", "L"):
        tiny.zero_grad(set_to_none=True)
        tiny.set_variant(variant)(image).abs().mean().backward()
        grads[variant] = {n: p.grad.clone() for n, p in tiny.named_parameters() if p.grad is not None}
    assert {n: p.data_ptr() for n, p in tiny.named_parameters()} == before
    assert set(grads["S"]) == set(grads["L"]), "both depths train the same tensors"
    assert not torch.equal(grads["S"]["latent.attn.qkv.weight"], grads["L"]["latent.attn.qkv.weight"])


def test_s_and_l_differ_on_the_same_input(tiny: DyNet, image: torch.Tensor) -> None:
    with torch.no_grad():
        s = tiny.set_variant("S")(image)
        l_out = tiny.set_variant("L")(image)
    assert (s - l_out).abs().max() > 1e-4


def test_gradients_reach_used_params_and_not_the_unused_convs(tiny: DyNet, image: torch.Tensor) -> None:
    tiny.train()
    tiny.set_variant("S")(image).square().mean().backward()
    no_grad = [n for n, p in tiny.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert sorted(no_grad) == [f"reduce_noise_channel_{i}.weight" for i in (1, 2, 3)]
    assert set(tiny.used_parameter_names()) == {n for n, _ in tiny.named_parameters()} - set(no_grad)


def test_layernorm_matches_spec_formula() -> None:
    torch.manual_seed(4)
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.body.weight.uniform_(0.5, 1.5)
        norm.body.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    mu = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    expected = (x - mu) / torch.sqrt(var + 1e-5) * norm.body.weight[:, None, None] + norm.body.bias[
        :, None, None
    ]
    assert torch.allclose(norm(x), expected, atol=1e-5)


def test_mdta_matches_per_head_formula() -> None:
    torch.manual_seed(5)
    attn = MDTA(8, num_heads=2)
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.5, 2.0]).view(2, 1, 1))
    x = torch.randn(1, 8, 6, 5)
    qkv = attn.qkv_dwconv(attn.qkv(x)).flatten(2)  # (1, 24, 30)
    outs = []
    for head in range(2):
        rows = slice(head * 4, head * 4 + 4)
        q = F.normalize(qkv[0, 0:8][rows], dim=-1)
        k = F.normalize(qkv[0, 8:16][rows], dim=-1)
        v = qkv[0, 16:24][rows]
        outs.append(torch.softmax(q @ k.T * attn.temperature[head, 0, 0], dim=-1) @ v)
    expected = attn.project_out(torch.cat(outs).view(1, 8, 6, 5))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_width_must_suit_the_heads() -> None:
    with pytest.raises(ValueError, match="width"):
        DyNet("S", width=12)
