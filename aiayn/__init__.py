"""aiayn: the Transformer of "Attention Is All You Need" (Vaswani et al., 2017)."""
from aiayn.model import ModelConfig, Transformer

__all__ = ["ModelConfig", "Transformer"]
__version__ = "0.1.0"
