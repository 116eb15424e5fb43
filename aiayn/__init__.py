"""aiayn: the Transformer of "Attention Is All You Need" (Vaswani et al., 2017)."""
from typing import Any

from aiayn.model.config import ModelConfig

__all__ = ["ModelConfig", "Transformer", "Translator", "pipeline"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `from aiayn import Translator` loads decoding (and its tokenizers) on first use only, so that
    # `import aiayn` stays light.
    if name == "Transformer":
        from aiayn.model.transformer import Transformer

        return Transformer
    if name == "Translator":
        from aiayn.decoding.translator import Translator

        return Translator
    if name == "pipeline":
        from aiayn.family.classifier import pipeline

        return pipeline
    raise AttributeError(f"module 'aiayn' has no attribute {name!r}")
