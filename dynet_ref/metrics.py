"""Full-reference metrics in torch, equal to scikit-image's (what the DyNet/PromptIR code scores with).

* `psnr(pred, target)` = `skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=1)` per image.
* `ssim(pred, target)` = `skimage.metrics.structural_similarity(target, pred, data_range=1,
  channel_axis=-1)` per image: 7×7 uniform window, sample covariance (49/48), K1 0.01, K2 0.03,
  the 3-pixel border of the SSIM map left out, channels averaged.
* `rgb_to_y` = MATLAB's `rgb2ycbcr` luma (BT.601, studio range: Y in [16/255, 235/255]).
* `center_crop_multiple(img, 16)` = the reference's `crop_img(img, base=16)`.

Inputs are (B, C, H, W) float tensors on any device; metrics are computed in float64 and
returned as (B,) float64 tensors (one value per image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# MATLAB rgb2ycbcr, for R, G, B in [0, 1]: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(f"metrics need two (B, C, H, W) tensors of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image (B,): 10·log10(data_range² / MSE over C, H, W), in float64."""
    _check_pair(pred, target)
    diff = pred.to(torch.float64) - target.to(torch.float64)
    mse = diff.square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image (B,), scikit-image's default (7×7 uniform window, border 3 left out), float64."""
    _check_pair(pred, target)
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got "
                         f"{tuple(pred.shape[-2:])}")
    x = target.to(torch.float64)
    y = pred.to(torch.float64)
    b, c, h, w = x.shape
    # one pass of a 7×7 box filter over the five maps; 'valid' output = skimage's map with the border cropped
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(b * 5 * c, 1, h, w)
    means = F.avg_pool2d(stack, SSIM_WINDOW, stride=1).reshape(b, 5, c, h - SSIM_WINDOW + 1, -1)
    ux, uy, uxx, uyy, uxy = means.unbind(dim=1)
    cov_norm = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s_map.flatten(2).mean(dim=2).mean(dim=1)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] → (B, 1, H, W) BT.601 luma as MATLAB rgb2ycbcr, in [16/255, 235/255]."""
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"rgb_to_y needs a (B, 3, H, W) tensor, got {tuple(img.shape)}")
    weights = torch.tensor(Y_WEIGHTS, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return ((img * weights).sum(dim=1, keepdim=True) + Y_OFFSET) / 255.0


def center_crop_multiple(img: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """Centre-crop (..., H, W) to multiples of `multiple` like the reference's crop_img (odd extra: bottom/right)."""
    h, w = img.shape[-2:]
    if h < multiple or w < multiple:
        raise ValueError(f"image of {h}x{w} is smaller than one {multiple}x{multiple} block; cannot crop")
    top, left = (h % multiple) // 2, (w % multiple) // 2
    return img[..., top : top + h - h % multiple, left : left + w - w % multiple]
