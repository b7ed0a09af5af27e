"""No-reference IQA metrics: NIQE and BRISQUE (MATLAB-faithful, LIVE parameters), NIMA (user weights).

Explicit imports register the metrics; `get(name)` builds one, `names()` lists them.
"""

from million_ird.iqa import brisque, nima, niqe  # noqa: F401  (register the metrics)
from million_ird.iqa.registry import Metric, MetricOptions, get, names, register

__all__ = ["Metric", "MetricOptions", "get", "names", "register"]
