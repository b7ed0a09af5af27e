"""Reference DyNet (Dudhane et al. 2024): one set of weights, L and S depths, tools around it."""

from dynet_ref.model import VARIANTS, DyNet, build, pad_to_multiple, resolve_reuse, to_channels_last

__all__ = ["VARIANTS", "DyNet", "build", "pad_to_multiple", "resolve_reuse", "to_channels_last"]
