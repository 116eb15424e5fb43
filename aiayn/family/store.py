"""What the descendants' checkpoints need beyond the store of aiayn.checkpoint (which opens a
checkpoint of a kind and checks its vocabulary): their config's fields, and a vocabulary learned
on text."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from aiayn.checkpoint import CheckpointError, check_vocabulary, load_tokenizer
from aiayn.data.tokenizer import Tokenizer
from aiayn.errors import InputError
from aiayn.model import ModelConfig

def config_field(config: dict[str, Any], name: str, kind: type, directory: Path, minimum: int | None = None) -> Any:
    """config[name], which must be a `kind` (an int at least `minimum`); CheckpointError naming the field else."""
    value = config.get(name)
    wrong = not isinstance(value, kind) or isinstance(value, bool) and kind is not bool
    if wrong or minimum is not None and value < minimum:
        at_least = f" of at least {minimum}" if minimum is not None else ""
        raise CheckpointError(f"{directory / 'config.json'}: field {name!r} missing or not a {kind.__name__}{at_least}")
    return value


def learn_tokenizer(texts: list[str], vocab_size: int, seed: int, symbols: tuple[str, ...] = ()) -> Tokenizer:
    """The shared BPE vocabulary learned on `texts`; InputError when SentencePiece cannot learn it."""
    try:
        return Tokenizer.train(texts, vocab_size, seed=seed, symbols=symbols)
    except RuntimeError as error:  # e.g. a vocabulary smaller than the characters seen
        raise InputError(f"--vocab-size {vocab_size}: SentencePiece cannot learn it on this text "
                         f"({(str(error).strip().splitlines() or ['?'])[-1]})") from None


def text_tokenizer(directory: Path, model_config: ModelConfig) -> Tokenizer:
    """A descendant's vocabulary, which must be its model's."""
    tokenizer = load_tokenizer(directory / "tokenizer.model")
    check_vocabulary(tokenizer, model_config, directory)
    return tokenizer


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
