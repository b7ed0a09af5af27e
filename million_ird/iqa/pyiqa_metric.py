"""Optional backend: any pyiqa metric as `pyiqa:<name>` (pyiqa is PolyForm-Noncommercial; never required)."""

from __future__ import annotations

from typing import Any

import numpy as np

from million_ird.iqa.registry import Metric, MetricOptions


class PyiqaMetric(Metric):
    """Wraps `pyiqa.create_metric(name)`; imported lazily, with a clear error when the extra is absent."""

    version = "pyiqa"
    accepts_gray = False

    def __init__(self, metric_name: str, options: MetricOptions) -> None:
        super().__init__(options)
        self.name = f"pyiqa:{metric_name}"
        self.metric_name = metric_name
        self._m: Any = None

    def setup(self) -> None:
        """Import pyiqa and build the metric."""
        if self._m is not None:
            return
        try:
            import pyiqa
        except ImportError as exc:
            raise ImportError(f"metric {self.name!r} needs the optional extra: pip install 'million-ird[pyiqa]' "
                              "(pyiqa is PolyForm-Noncommercial-1.0.0)") from exc
        self._m = pyiqa.create_metric(self.metric_name, device=self.options.device)
        self.lower_is_better = bool(self._m.lower_better)
        self.version = f"pyiqa-{pyiqa.__version__}"

    def score(self, img: np.ndarray) -> float:
        """Score one RGB uint8 image with pyiqa (input as a [0, 1] float tensor)."""
        import torch

        self.setup()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        x = torch.from_numpy(np.ascontiguousarray(img[:, :, :3].transpose(2, 0, 1))).float()[None] / 255.0
        return float(self._m(x.to(self.options.device)).item())
