"""The model of §3: configuration and the Transformer."""
from aiayn.model.config import ModelConfig
from aiayn.model.transformer import AttentionMaps, DecoderCache, Transformer, padding_mask, parameter_counts

__all__ = ["AttentionMaps", "DecoderCache", "ModelConfig", "Transformer", "padding_mask", "parameter_counts"]
