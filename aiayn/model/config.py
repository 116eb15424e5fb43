"""Model hyper-parameters, with the presets of Table 3 of the paper and small CPU-sized ones."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from aiayn.errors import InputError

PositionalEncoding = Literal["sinusoidal", "learned"]
NormPlacement = Literal["post", "pre"]
Activation = Literal["relu", "swish", "gelu"]
ACTIVATIONS = get_args(Activation)
Pooling = Literal["cls", "mean"]  # how a classifier sums a sentence up (model.family.EncoderClassifier)
POOLINGS = get_args(Pooling)
BERT_MASKED = 0.15  # masked-language modelling: BERT's share of the tokens to predict
MOST_MASKED = 0.99  # a sentence needs tokens left to predict the masked ones from


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a `Transformer`; saved as JSON beside every checkpoint.

    Defaults are the paper's base model (Table 3). Special ids follow the SentencePiece layout the
    tokenizer writes: pad 0, bos (<sos>) 1, eos 2.
    """

    vocab_size: int = 37000
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    dropout: float = 0.1
    max_positions: int = 1024
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    positional_encoding: PositionalEncoding = "sinusoidal"  # §3.5; "learned" is Table 3 row (E)
    norm_placement: NormPlacement = "post"  # the paper's LayerNorm(x + Sublayer(x)), §3.1
    share_embeddings: bool = True  # source, target and pre-softmax weights are one matrix, §3.4
    # Not the paper's; for imported Marian models (aiayn.interop): the feed-forward activation
    # ("relu" is Eq. 2's max(0, x); Marian's "swish" is x * sigmoid(x), SiLU) and a bias on the
    # pre-softmax projection (Marian's final_logits_bias; §3.4's projection has none).
    activation: Activation = "relu"
    output_bias: bool = False

    PRESETS = {
        # Table 3, "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1 (65M parameters).
        "base": dict(d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6, dropout=0.1),
        # Table 3, "big": N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3 (213M parameters).
        "big": dict(d_model=1024, n_heads=16, d_ff=4096, n_encoder_layers=6, n_decoder_layers=6, dropout=0.3),
        # Trains on a laptop CPU in minutes to hours (the peers' size "S").
        "small": dict(d_model=256, n_heads=4, d_ff=1024, n_encoder_layers=3, n_decoder_layers=3, dropout=0.1),
        # For tests: a forward pass in milliseconds.
        "tiny": dict(d_model=32, n_heads=4, d_ff=64, n_encoder_layers=2, n_decoder_layers=2, dropout=0.1),
    }

    # Parameter counts the paper reports in Table 3, for comparison (`aiayn params`).
    PAPER_PARAMETERS = {"base": 65_000_000, "big": 213_000_000}

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "max_positions"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_encoder_layers", "n_decoder_layers"):  # 0 for a model without that stack
            if getattr(self, name) < 0:
                raise InputError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise InputError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_model % 2 and self.positional_encoding == "sinusoidal":
            raise InputError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.positional_encoding not in ("sinusoidal", "learned"):
            raise InputError(f"positional_encoding must be 'sinusoidal' or 'learned', got {self.positional_encoding!r}")
        if self.norm_placement not in ("post", "pre"):
            raise InputError(f"norm_placement must be 'post' or 'pre', got {self.norm_placement!r}")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise InputError(f"{name}={value} is outside the vocabulary of {self.vocab_size}")

    @property
    def d_head(self) -> int:
        """d_k = d_v = d_model / h (§3.2.2)."""
        return self.d_model // self.n_heads

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named preset (`base`, `big`, `small`, `tiny`) with any field overridden."""
        if name not in cls.PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """The config saved by `to_dict`; a field it lacks (one added later) takes its default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**values)
