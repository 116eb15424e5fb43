"""The model of §3: configuration and the Transformer (and, in aiayn.model.family, its descendants).

The names load on first use, so that importing the configuration alone (the command line, the
data-preparing worker processes) does not load torch."""
from typing import Any

from aiayn.model.config import ModelConfig

__all__ = ["AttentionMaps", "DecoderCache", "ModelConfig", "Transformer", "padding_mask", "parameter_counts"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from aiayn.model import transformer

        return getattr(transformer, name)
    raise AttributeError(f"module 'aiayn.model' has no attribute {name!r}")
