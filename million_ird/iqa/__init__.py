"""No-reference IQA metrics: NIQE and BRISQUE (MATLAB-faithful, LIVE parameters), NIMA (user weights).

Explicit imports register the metrics; `get(name)` builds one, `names()` lists them.
"""

from million_ird.iqa import brisque, nima, niqe  # noqa: F401  (register the metrics)
from million_ird.iqa.pyiqa_metric import PyiqaMetric
from million_ird.iqa.registry import Metric, MetricOptions, get, names, register, register_family

register_family("pyiqa", PyiqaMetric)  # pyiqa itself is imported only when such a metric is set up

__all__ = ["Metric", "MetricOptions", "get", "names", "register"]
