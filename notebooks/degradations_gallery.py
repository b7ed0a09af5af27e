# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Degradations gallery
# Every registered degradation at three strengths on one natural image, the input PSNR of each, and
# one pre-training sample (masked / degraded / clean blocks). All draws come from per-sample generators
# seeded by (seed, sample id, operation), so this notebook gives the same pictures on every machine.
# Set `GALLERY_OUT` to choose where the PNGs go (default: `notebooks/_out`).

# %%
import os
from pathlib import Path

import cv2
import numpy as np

import degradations
from degradations.gallery import STRENGTHS, save_gallery
from degradations.recipes import MASKED, PretrainConfig, pretrain_detailed

OUT = Path(os.environ.get("GALLERY_OUT", "notebooks/_out"))
SEED = 0
try:
    import skimage.data

    image = skimage.data.astronaut()
except ImportError:  # a smooth synthetic scene when scikit-image is absent
    yy, xx = np.mgrid[0:512, 0:512]
    image = np.stack([xx / 2, yy / 2, (xx + yy) / 4], axis=-1).astype(np.uint8)
print("degradations:", ", ".join(degradations.names()))

# %% [markdown]
# ## The gallery: rows = degradations, columns = clean + three strengths

# %%
gallery_path = save_gallery(image, OUT / "degradations_gallery.png", seed=SEED, tile=256)
print("wrote", gallery_path)


# %% [markdown]
# ## Input PSNR per degradation and strength (dB, RGB, 0..255)

# %%
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB for uint8 images."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


table = {}
for name, settings in STRENGTHS.items():
    row = []
    for i, params in enumerate(settings):
        out, used = degradations.get(name)(image, degradations.sample_rng(SEED, "gallery", f"{name}/{i}"), **params)
        row.append(round(psnr(out, image), 2))
    table[name] = row
    print(f"{name:15s}", row)

# %% [markdown]
# ## One pre-training sample: input, target, block map (white = masked, grey = degraded)

# %%
cfg = PretrainConfig()
inp, target, labels, info = pretrain_detailed(image, degradations.sample_rng(SEED, "notebook", "pretrain"), cfg)
label_rgb = np.repeat((labels * 127).astype(np.uint8)[..., None], 3, axis=-1)
strip = np.hstack([inp, target, label_rgb])
cv2.imwrite(str(OUT / "pretrain_sample.png"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
print(info, "masked fraction:", float((labels == MASKED).mean()))
