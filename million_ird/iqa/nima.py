"""NIMA (Talebi & Milanfar 2018): Inception-ResNet-v2 (timm) + a 10-bin head; the score is the mean bin.

No weights ship with this package (no registry carries AVA-trained NIMA weights). The checkpoint
layout we load (a `.safetensors` file or a torch `.pth`/`.pt` state dict, optionally nested under
"state_dict" or "params"):

- `backbone.*`: timm `inception_resnet_v2` created with `num_classes=0` (global average pool ->
  1536 features), parameter names exactly as timm names them;
- `head.weight` (10, 1536) and `head.bias` (10,): the linear layer before the softmax.

The pyiqa-style layout (`base_model.*` for the backbone, `classifier.0.*` or `classifier.1.*` for the
linear layer) is renamed to the above on load; keys that remain unmatched are an error naming them.
Input: RGB resized to 299x299 (bilinear), scaled to [-1, 1] (Inception normalisation, mean = std = 0.5).
Weights come from `--nima-weights PATH`, else from the folder in $MILLION_IRD_NIMA_DIR holding
`nima_inception_resnet_v2.safetensors` (or `.pth`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from million_ird.iqa.registry import Metric, MetricOptions, register

log = logging.getLogger(__name__)

NIMA_VERSION = "nima-irv2-1"
ENV_DIR = "MILLION_IRD_NIMA_DIR"
FILE_STEMS = ("nima_inception_resnet_v2.safetensors", "nima_inception_resnet_v2.pth")
INPUT_SIZE = 299
PREFIX_MAP = (("base_model.", "backbone."), ("classifier.0.", "head."), ("classifier.1.", "head."))


class NimaUnavailable(RuntimeError):
    """NIMA has no weights: the message says where they were looked for and how to provide them."""


def resolve_weights(path: str | None) -> Path:
    """The weights file: `path` if given, else $MILLION_IRD_NIMA_DIR/nima_inception_resnet_v2.*."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise NimaUnavailable(f"NIMA weights file {p} does not exist; pass --nima-weights PATH to a real file")
        return p
    folder = os.environ.get(ENV_DIR)
    if folder:
        for stem in FILE_STEMS:
            if (Path(folder) / stem).is_file():
                return Path(folder) / stem
    raise NimaUnavailable(f"no NIMA weights: pass --nima-weights PATH or put {FILE_STEMS[0]} in the folder named by "
                          f"${ENV_DIR} (currently {folder!r}); no registry ships AVA-trained NIMA weights")


def _read_state(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "params"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def remap_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Rename pyiqa-style keys to our layout (backbone.*, head.*); strips a leading 'module.'."""
    out = {}
    for key, value in state.items():
        k = key[7:] if key.startswith("module.") else key
        for old, new in PREFIX_MAP:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = value
    return out


def build_nima() -> Any:
    """The NIMA network (random weights): timm inception_resnet_v2 backbone + Linear(1536, 10)."""
    import timm
    import torch

    class Nima(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=0)
            self.head = torch.nn.Linear(self.backbone.num_features, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.head(self.backbone(x)), dim=-1)

    return Nima()


def preprocess(img: np.ndarray) -> np.ndarray:
    """RGB uint8 (or gray) -> float32 CHW in [-1, 1] at 299x299."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    if img.dtype == np.uint16:
        img = (img / 257.0 + 0.5).astype(np.uint8)
    x = cv2.resize(img, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return np.ascontiguousarray((x / 127.5 - 1.0).transpose(2, 0, 1))


@register("nima")
class NimaMetric(Metric):
    """NIMA mean score (1..10, higher is better) from user-supplied weights."""

    version = NIMA_VERSION
    lower_is_better = False
    accepts_gray = False
    batched = True

    def unavailable(self) -> str | None:
        """The reason when no weights file can be found (NIMA is then skipped, not failed)."""
        try:
            resolve_weights(self.options.nima_weights)
        except NimaUnavailable as exc:
            return str(exc)
        return None

    def __init__(self, options: MetricOptions) -> None:
        super().__init__(options)
        self._net: Any = None
        self._sha = ""

    def setup(self) -> None:
        """Find the weights, build the network and load them (raises NimaUnavailable without weights)."""
        if self._net is not None:
            return
        path = resolve_weights(self.options.nima_weights)
        self._sha = hashlib.sha256(path.read_bytes()).hexdigest()
        net = build_nima()
        state = remap_keys(_read_state(path))
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"NIMA weights {path} do not match the layout in million_ird.iqa.nima: missing "
                             f"{list(missing)[:5]}..., unexpected {list(unexpected)[:5]}...")
        self._net = net.eval().to(self.options.device)
        log.info("NIMA weights %s (sha256 %s) on %s", path, self._sha[:12], self.options.device)

    @property
    def params_sha256(self) -> str:
        """sha256 of the weights file (hashed without building the network; raises NimaUnavailable without weights)."""
        if not self._sha:
            self._sha = hashlib.sha256(resolve_weights(self.options.nima_weights).read_bytes()).hexdigest()
        return self._sha

    def score(self, img: np.ndarray) -> float:
        """Mean NIMA score of one image."""
        return self.score_batch([img])[0]

    def score_batch(self, imgs: list[np.ndarray]) -> list[float]:
        """Mean NIMA scores, run in batches of `options.batch_size` on `options.device`."""
        import torch

        self.setup()
        bins = torch.arange(1, 11, dtype=torch.float32, device=self.options.device)
        out: list[float] = []
        bs = max(1, self.options.batch_size)
        with torch.inference_mode():
            for i in range(0, len(imgs), bs):
                x = torch.from_numpy(np.stack([preprocess(im) for im in imgs[i:i + bs]])).to(self.options.device)
                probs = self._net(x)
                out.extend((probs * bins).sum(dim=1).cpu().tolist())
        return out
