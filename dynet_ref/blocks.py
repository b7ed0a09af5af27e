"""Building blocks of DyNet (Restormer-style transformer block, resizing, prompt generation).

Attribute names follow the reference network so that its state dict loads unchanged
(see shared/specs/dynet.md and dynet_official_state_dict.json).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FFN_EXPANSION = 2.66
LN_EPS = 1e-5
NORM_EPS = 1e-12  # F.normalize's eps


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis at every pixel ("WithBias", biased variance, eps 1e-5)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, C, H, W) over C."""
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MDTA(nn.Module):
    """Multi-Dconv-head transposed attention: a C×C attention per head over the spatial axis."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"MDTA: dim {dim} is not divisible by num_heads {num_heads}; pick a width that is"
            )
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply attention to (B, C, H, W).

        softmax(normalize(q)·normalize(k)ᵀ·t) is computed as softmax(q·kᵀ / (|q|·|k|ᵀ)·t): the same
        value (norms clamped at 1e-12 as F.normalize does) without two normalised C×HW copies.
        """
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.unbind(1)
        q_norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(NORM_EPS)
        k_norm = torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(NORM_EPS)
        logits = (q @ k.transpose(-2, -1)) / (q_norm * k_norm.transpose(-2, -1))
        attn = torch.softmax(logits * self.temperature, dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: gelu(x1) * x2 after a depthwise 3×3."""

    def __init__(self, dim: int, expansion: float = FFN_EXPANSION) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=False)
        self.dwconv = nn.Conv2d(
            hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=False
        )
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=False)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated feed-forward to (B, C, H, W)."""
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        if torch.is_grad_enabled():
            return self.project_out(self.act(x1) * x2)
        return self.project_out(self.act(x1).mul_(x2))  # inference: reuse the GELU output buffer


class TransformerBlock(nn.Module):
    """Pre-norm block: x += MDTA(LN(x)); x += GDFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = MDTA(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = GDFN(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block once."""
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(nn.Module):
    """conv3x3 C→C/2 then PixelUnshuffle(2): (C, H, W) → (2C, H/2, W/2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve the resolution, double the channels."""
        return self.body(x)


class Upsample(nn.Module):
    """conv3x3 C→2C then PixelShuffle(2): (C, H, W) → (C/2, 2H, 2W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double the resolution, halve the channels."""
        return self.body(x)


class PatchEmbed(nn.Module):
    """Overlapped patch embedding: a single conv3x3 from RGB to `dim` channels."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed an image."""
        return self.proj(x)


class PromptGenBlock(nn.Module):
    """Prompt = Σ softmax(Linear(GAP(x)))·prompt_param, bilinearly resized to x, then conv3x3."""

    def __init__(self, prompt_dim: int, prompt_len: int, prompt_size: int, lin_dim: int) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Generate a (B, prompt_dim, H, W) prompt for the feature map x."""
        weights = torch.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # (B, L)
        prompt = torch.einsum("bl,lchw->bchw", weights, self.prompt_param[0])
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv3x3(prompt)
