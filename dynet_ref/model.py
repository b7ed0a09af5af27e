"""DyNet: one set of weights, two depths (L and S) chosen at run time by block-reuse counts.

Each encoder level owns ONE transformer block applied f times in a row; the decoder levels
reuse their encoder level's f. DyNet-L uses f = (4, 6, 6, 8), DyNet-S f = (2, 3, 3, 4).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynet_ref.blocks import Downsample, PatchEmbed, PromptGenBlock, TransformerBlock, Upsample

log = logging.getLogger(__name__)

VARIANTS: dict[str, tuple[int, int, int, int]] = {"L": (4, 6, 6, 8), "S": (2, 3, 3, 4)}
HEADS = (1, 2, 4, 8)
PROMPT_HEADS = 4
PROMPT_LEN = 5
PROMPT_SIZES = (64, 32, 16)
REFERENCE_WIDTH = 48
REFERENCE_PROMPT_DIMS = (64, 128, 320)
MULTIPLE = 8  # three 2× downsamplings

ReuseSpec = str | Sequence[int]


def resolve_reuse(variant: ReuseSpec) -> tuple[int, int, int, int]:
    """Turn "S"/"L" or four positive ints into the per-level reuse counts."""
    if isinstance(variant, str):
        key = variant.upper()
        if key not in VARIANTS:
            raise ValueError(f"variant={variant!r} is unknown; use one of {sorted(VARIANTS)} or four ints")
        return VARIANTS[key]
    reuse = tuple(int(f) for f in variant)
    if len(reuse) != 4 or min(reuse) < 1:
        raise ValueError(f"reuse={variant!r} must be four positive ints (levels 1, 2, 3, latent)")
    return reuse  # type: ignore[return-value]


def prompt_dims(width: int) -> tuple[int, int, int]:
    """Prompt channel counts, scaled from the reference (64, 128, 320 at width 48), multiples of 4."""
    if width == REFERENCE_WIDTH:
        return REFERENCE_PROMPT_DIMS
    return tuple(max(4, 4 * round(p * width / REFERENCE_WIDTH / 4)) for p in REFERENCE_PROMPT_DIMS)  # type: ignore[return-value]


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad (B, C, H, W) at the bottom/right to multiples of `multiple`; return x and (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


class DyNet(nn.Module):
    """DyNet all-in-one restorer; `set_variant` switches depth on the same weights."""

    def __init__(self, variant: ReuseSpec = "S", width: int = REFERENCE_WIDTH, in_channels: int = 3) -> None:
        super().__init__()
        if width % 8:
            raise ValueError(f"width={width} must be a multiple of 8 (heads 1/2/4/8 at the four levels)")
        self.width = width
        self.reuse = resolve_reuse(variant)
        d1, d2, d3, d4 = width, width * 2, width * 4, width * 8
        p1, p2, p3 = prompt_dims(width)
        self.patch_embed = PatchEmbed(in_channels, d1)
        self.prompt1 = PromptGenBlock(p1, PROMPT_LEN, PROMPT_SIZES[0], d2)
        self.prompt2 = PromptGenBlock(p2, PROMPT_LEN, PROMPT_SIZES[1], d3)
        self.prompt3 = PromptGenBlock(p3, PROMPT_LEN, PROMPT_SIZES[2], d4)
        # Unused in forward; the released checkpoints contain them, so they exist for loading.
        self.reduce_noise_channel_1 = nn.Conv2d(d1 + p1, d1, kernel_size=1, bias=False)
        self.encoder_level1 = TransformerBlock(d1, HEADS[0])
        self.down1_2 = Downsample(d1)
        self.reduce_noise_channel_2 = nn.Conv2d(d2 + p2, d2, kernel_size=1, bias=False)
        self.encoder_level2 = TransformerBlock(d2, HEADS[1])
        self.down2_3 = Downsample(d2)
        self.reduce_noise_channel_3 = nn.Conv2d(d3 + 2 * p2, d3, kernel_size=1, bias=False)
        self.encoder_level3 = TransformerBlock(d3, HEADS[2])
        self.down3_4 = Downsample(d3)
        self.latent = TransformerBlock(d4, HEADS[3])
        self.up4_3 = Upsample(d3)
        self.reduce_chan_level3 = nn.Conv2d(d2 + d3, d3, kernel_size=1, bias=False)
        self.noise_level3 = TransformerBlock(d4 + p3, PROMPT_HEADS)
        self.reduce_noise_level3 = nn.Conv2d(d4 + p3, d3, kernel_size=1, bias=False)
        self.decoder_level3 = TransformerBlock(d3, HEADS[2])
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=False)
        self.noise_level2 = TransformerBlock(d3 + p2, PROMPT_HEADS)
        self.reduce_noise_level2 = nn.Conv2d(d3 + p2, d3, kernel_size=1, bias=False)
        self.decoder_level2 = TransformerBlock(d2, HEADS[1])
        self.up2_1 = Upsample(d2)
        self.noise_level1 = TransformerBlock(d2 + p1, PROMPT_HEADS)
        self.reduce_noise_level1 = nn.Conv2d(d2 + p1, d2, kernel_size=1, bias=False)
        self.decoder_level1 = TransformerBlock(d2, HEADS[0])
        self.refinement = nn.Sequential(*[TransformerBlock(d2, HEADS[0]) for _ in range(4)])
        self.output = nn.Conv2d(d2, in_channels, kernel_size=3, padding=1, bias=False)

    def set_variant(self, variant: ReuseSpec) -> DyNet:
        """Switch to "S", "L" or explicit reuse counts in place (same weights); returns self."""
        self.reuse = resolve_reuse(variant)
        return self

    @property
    def variant(self) -> str:
        """ "S" or "L" when the reuse counts match one, else the counts as text."""
        for name, reuse in VARIANTS.items():
            if reuse == self.reuse:
                return name
        return ",".join(map(str, self.reuse))

    @staticmethod
    def _repeat(block: nn.Module, x: torch.Tensor, times: int) -> torch.Tensor:
        for _ in range(times):
            x = block(x)
        return x

    @staticmethod
    def _prompted(x: torch.Tensor, prompt: nn.Module, block: nn.Module, reduce: nn.Module) -> torch.Tensor:
        return reduce(block(torch.cat([x, prompt(x)], dim=1)))

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """Run the network on (B, 3, H, W) with H, W multiples of 8 (no padding)."""
        f1, f2, f3, f4 = self.reuse
        enc1 = self._repeat(self.encoder_level1, self.patch_embed(img), f1)
        enc2 = self._repeat(self.encoder_level2, self.down1_2(enc1), f2)
        enc3 = self._repeat(self.encoder_level3, self.down2_3(enc2), f3)
        latent = self._repeat(self.latent, self.down3_4(enc3), f4)
        latent = self._prompted(latent, self.prompt3, self.noise_level3, self.reduce_noise_level3)
        skip3 = self._prompted(enc3, self.prompt2, self.noise_level2, self.reduce_noise_level2)
        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), skip3], dim=1))
        dec3 = self._repeat(self.decoder_level3, dec3, f3)
        skip2 = self._prompted(enc2, self.prompt1, self.noise_level1, self.reduce_noise_level1)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), skip2], dim=1))
        dec2 = self._repeat(self.decoder_level2, dec2, f2)
        dec1 = self._repeat(self.decoder_level1, torch.cat([self.up2_1(dec2), enc1], dim=1), f1)
        return self.output(self.refinement(dec1)) + img

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Restore (B, 3, H, W) in [0, 1] of any size: reflect-pad to multiples of 8, crop back."""
        if img.dim() != 4:
            raise ValueError(f"DyNet expects a (B, C, H, W) tensor, got shape {tuple(img.shape)}")
        padded, h, w = pad_to_multiple(img)
        out = self.forward_features(padded)
        return out[..., :h, :w] if padded.shape[-2:] != img.shape[-2:] else out

    def used_parameter_names(self) -> list[str]:
        """Names of parameters that forward uses (all but the three reduce_noise_channel_* convs)."""
        return [n for n, _ in self.named_parameters() if not n.startswith("reduce_noise_channel_")]


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store 4-D conv weights channels-last (faster on CPU; prompt_param is 5-D and stays); in place."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
    return model


def build(variant: ReuseSpec = "S", width: int = REFERENCE_WIDTH) -> DyNet:
    """Build a DyNet in eval mode."""
    return DyNet(variant=variant, width=width).eval()
