"""Exact tiled DyNet inference: local ops run tile by tile, global statistics are streamed.

Every local op (1x1 and 3x3 convs, LayerNorm over channels, GELU gating, pixel (un)shuffle) is a
`Lazy` map: asked for a box of its output, it asks its input for the box grown by the halo it needs
(clipped at the image border, where it zero-pads exactly as the conv does) and crops nothing but what
it computed. The two global ops are computed in two passes over tiles:

* MDTA: pass 1 accumulates, per head, the Gram matrix q·kᵀ and the per-channel sums of q² and k²;
  normalising q and k is a per-channel scaling, so attn = softmax(t · Gram / (|q|·|k|ᵀ)) exactly.
  Pass 2 recomputes q, k, v per tile and applies attn·v, project_out, the residual and the whole
  GDFN (with one pixel of halo) tile by tile.
* Prompt blocks: the average pool is taken over the stored full-size feature map; the prompt is
  resized for just the requested box with the 1-D linear-interpolation matrices F.interpolate uses.

So qkv, the GDFN hidden expansion and the resized prompts never exist at full size. What does: the
feature map between two block applications (input and output of each block, C channels), the encoder
skips enc1/enc2/enc3 and the upsampled/concatenated decoder inputs. Output equals untiled inference up
to float summation order (~1e-6 max abs at width 8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynet_ref.blocks import NORM_EPS, PromptGenBlock, TransformerBlock
from dynet_ref.model import DyNet, pad_to_multiple

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open) at the map's own resolution


@dataclass(frozen=True)
class Lazy:
    """A feature map of spatial `size` that computes any box of itself on demand."""

    fn: Callable[[Box], torch.Tensor]
    size: tuple[int, int]

    def __call__(self, box: Box) -> torch.Tensor:
        """Values on `box` (which lies inside the map)."""
        return self.fn(box)


def stored(t: torch.Tensor) -> Lazy:
    """A full-size tensor viewed as a Lazy map (slicing)."""
    return Lazy(lambda b: t[..., b[0] : b[1], b[2] : b[3]], (t.shape[-2], t.shape[-1]))


def _pads(box: Box, r: int, size: tuple[int, int]) -> tuple[Box, tuple[int, int, int, int]]:
    """`box` grown by r and clipped to the map, and F.pad's (left, right, top, bottom) zeros that
    complete it to `box` ± r (what the conv's own zero padding supplies at the border)."""
    y0, y1, x0, x1 = box
    g = (max(y0 - r, 0), min(y1 + r, size[0]), max(x0 - r, 0), min(x1 + r, size[1]))
    return g, (g[2] - (x0 - r), (x1 + r) - g[3], g[0] - (y0 - r), (y1 + r) - g[1])


def conv(src: Lazy, layer: nn.Conv2d) -> Lazy:
    """A stride-1, zero-padded, bias-free conv of `src`, computed per box with its halo."""
    r = int(layer.padding[0])  # type: ignore[index]

    def fn(box: Box) -> torch.Tensor:
        g, pads = _pads(box, r, src.size)
        x = src(g)
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, layer.weight, None, groups=layer.groups)

    return Lazy(fn, src.size)


def pointwise(op: Callable[..., torch.Tensor], *srcs: Lazy) -> Lazy:
    """A per-pixel op of one or more same-size maps."""
    return Lazy(lambda b: op(*(s(b) for s in srcs)), srcs[0].size)


def concat(*srcs: Lazy) -> Lazy:
    """Channel concatenation of same-size maps."""
    return pointwise(lambda *parts: torch.cat(parts, dim=1), *srcs)


def down(src: Lazy, layer: nn.Conv2d) -> Lazy:
    """Downsample: conv3x3 then PixelUnshuffle(2) (the output box maps to twice its size in src)."""
    c = conv(src, layer)
    return Lazy(
        lambda b: F.pixel_unshuffle(c((2 * b[0], 2 * b[1], 2 * b[2], 2 * b[3])), 2),
        (src.size[0] // 2, src.size[1] // 2),
    )


def up(src: Lazy, layer: nn.Conv2d) -> Lazy:
    """Upsample: conv3x3 then PixelShuffle(2); odd box edges are cropped from the enclosing even box."""
    c = conv(src, layer)

    def fn(b: Box) -> torch.Tensor:
        y0, x0 = b[0] // 2, b[2] // 2
        out = F.pixel_shuffle(c((y0, -(-b[1] // 2), x0, -(-b[3] // 2))), 2)
        return out[..., b[0] - 2 * y0 : b[1] - 2 * y0, b[2] - 2 * x0 : b[3] - 2 * x0]

    return Lazy(fn, (src.size[0] * 2, src.size[1] * 2))


def tiles(size: tuple[int, int], tile: int) -> list[Box]:
    """Boxes of side `tile` covering a map of `size` (the last row/column may be smaller)."""
    return [
        (y, min(y + tile, size[0]), x, min(x + tile, size[1]))
        for y in range(0, size[0], tile)
        for x in range(0, size[1], tile)
    ]


def materialise(src: Lazy, tile: int) -> torch.Tensor:
    """Compute a Lazy map tile by tile into one full-size tensor."""
    out: torch.Tensor | None = None
    for box in tiles(src.size, tile):
        part = src(box)
        if out is None:
            out = part.new_empty(*part.shape[:2], *src.size)
        out[..., box[0] : box[1], box[2] : box[3]] = part
    assert out is not None
    return out


def _attention_matrix(block: TransformerBlock, qkv: Lazy, tile: int) -> torch.Tensor:
    """Pass 1 of MDTA: stream the Gram matrix and the norms of q and k; return softmax attention."""
    heads = block.attn.num_heads
    gram = q_sq = k_sq = None
    for box in tiles(qkv.size, tile):
        t = qkv(box)
        b, c3 = t.shape[:2]
        q, k, _ = t.reshape(b, 3, heads, c3 // (3 * heads), -1).unbind(1)
        g, qs, ks = q @ k.transpose(-2, -1), (q * q).sum(-1), (k * k).sum(-1)
        gram, q_sq, k_sq = (g, qs, ks) if gram is None else (gram + g, q_sq + qs, k_sq + ks)
    assert gram is not None and q_sq is not None and k_sq is not None
    q_norm = q_sq.sqrt().clamp_min(NORM_EPS)
    k_norm = k_sq.sqrt().clamp_min(NORM_EPS)
    logits = gram / (q_norm[..., :, None] * k_norm[..., None, :])
    return torch.softmax(logits * block.attn.temperature, dim=-1)


def block_apply(block: TransformerBlock, src: Lazy, tile: int) -> Lazy:
    """One transformer block on `src`: attention statistics now (pass 1), the output lazily (pass 2)."""
    mdta, ffn = block.attn, block.ffn
    qkv = conv(conv(pointwise(block.norm1, src), mdta.qkv), mdta.qkv_dwconv)
    attn = _attention_matrix(block, qkv, tile)

    def attended(box: Box) -> torch.Tensor:
        t = qkv(box)
        b, c3, h, w = t.shape
        v = t[:, 2 * c3 // 3 :].reshape(b, mdta.num_heads, c3 // (3 * mdta.num_heads), h * w)
        return src(box) + mdta.project_out((attn @ v).reshape(b, c3 // 3, h, w))

    y = Lazy(attended, src.size)

    def fn(box: Box) -> torch.Tensor:
        g, pads = _pads(box, 1, src.size)
        yg = y(g)
        hidden = F.pad(ffn.project_in(block.norm2(yg)), pads)
        x1, x2 = F.conv2d(hidden, ffn.dwconv.weight, None, groups=ffn.dwconv.groups).chunk(2, dim=1)
        inner = yg[..., box[0] - g[0] : box[1] - g[0], box[2] - g[2] : box[3] - g[2]]
        return inner + ffn.project_out(ffn.act(x1) * x2)

    return Lazy(fn, src.size)


def repeat(block: TransformerBlock, x: torch.Tensor, times: int, tile: int) -> torch.Tensor:
    """Apply `block` `times` times, materialising the map between applications."""
    for _ in range(times):
        x = materialise(block_apply(block, stored(x), tile), tile)
    return x


def _resize_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_in, n_out) weights of 1-D linear interpolation (align_corners=False), as F.interpolate uses."""
    eye = torch.eye(n_in, dtype=like.dtype, device=like.device)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0]


def prompt(gen: PromptGenBlock, x: torch.Tensor) -> Lazy:
    """PromptGenBlock(x) as a Lazy map: pooled weights now, the resized prompt and conv3x3 per box."""
    weights = torch.softmax(gen.linear_layer(x.mean(dim=(-2, -1))), dim=1)
    small = torch.einsum("bl,lchw->bchw", weights, gen.prompt_param[0])
    ry = _resize_matrix(small.shape[-2], x.shape[-2], small)
    rx = _resize_matrix(small.shape[-1], x.shape[-1], small)
    resized = Lazy(lambda b: ry[:, b[0] : b[1]].T @ small @ rx[:, b[2] : b[3]], (x.shape[-2], x.shape[-1]))
    return conv(resized, gen.conv3x3)


def prompted(
    x: torch.Tensor, gen: PromptGenBlock, block: TransformerBlock, reduce: nn.Conv2d, tile: int
) -> torch.Tensor:
    """reduce(block(cat[x, prompt(x)])) with the concatenation never stored at full size."""
    joined = concat(stored(x), prompt(gen, x))
    return materialise(pointwise(reduce, block_apply(block, joined, tile)), tile)


def _features(model: DyNet, img: torch.Tensor, tile: int) -> torch.Tensor:
    """forward_features of `model`, level by level with tiles of tile/2^level pixels."""
    f1, f2, f3, f4 = model.reuse
    t1, t2, t3, t4 = (max(1, tile >> level) for level in range(4))
    enc1 = repeat(model.encoder_level1, materialise(conv(stored(img), model.patch_embed.proj), t1), f1, t1)
    enc2 = repeat(model.encoder_level2, materialise(down(stored(enc1), model.down1_2.body[0]), t2), f2, t2)
    enc3 = repeat(model.encoder_level3, materialise(down(stored(enc2), model.down2_3.body[0]), t3), f3, t3)
    latent = repeat(model.latent, materialise(down(stored(enc3), model.down3_4.body[0]), t4), f4, t4)
    latent = prompted(latent, model.prompt3, model.noise_level3, model.reduce_noise_level3, t4)
    skip3 = prompted(enc3, model.prompt2, model.noise_level2, model.reduce_noise_level2, t3)
    del enc3
    cat = concat(up(stored(latent), model.up4_3.body[0]), stored(skip3))
    dec3 = repeat(model.decoder_level3, materialise(pointwise(model.reduce_chan_level3, cat), t3), f3, t3)
    del skip3, latent
    skip2 = prompted(enc2, model.prompt1, model.noise_level1, model.reduce_noise_level1, t2)
    del enc2
    cat = concat(up(stored(dec3), model.up3_2.body[0]), stored(skip2))
    dec2 = repeat(model.decoder_level2, materialise(pointwise(model.reduce_chan_level2, cat), t2), f2, t2)
    del skip2, dec3
    cat = concat(up(stored(dec2), model.up2_1.body[0]), stored(enc1))
    dec1 = materialise(cat, t1)
    del enc1, dec2
    dec1 = repeat(model.decoder_level1, dec1, f1, t1)
    for refine in model.refinement:
        dec1 = repeat(refine, dec1, 1, t1)
    return materialise(pointwise(torch.add, conv(stored(dec1), model.output), stored(img)), t1)


@torch.no_grad()
def tiled_forward(model: DyNet, img: torch.Tensor, tile: int) -> torch.Tensor:
    """Same output as model(img) (any size; reflect-pad to multiples of 8, crop back) at lower peak memory."""
    if not isinstance(model, DyNet):
        raise TypeError(f"tiled_forward needs a dynet_ref.model.DyNet, got {type(model).__name__}")
    if tile < 8:
        raise ValueError(f"tile={tile} is too small; use at least 8 pixels (e.g. 256)")
    if img.dim() != 4:
        raise ValueError(f"tiled_forward expects a (B, C, H, W) tensor, got shape {tuple(img.shape)}")
    padded, h, w = pad_to_multiple(img)
    return _features(model, padded, tile)[..., :h, :w]
