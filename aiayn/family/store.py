"""Checkpoints of the Transformer's descendants: the translator's layout (model.safetensors,
config.json, tokenizer.model), with config.json naming the `kind` and what the kind needs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from aiayn.checkpoint import (
    TRANSLATOR,
    CheckpointError,
    load_tokenizer,
    load_weights,
    model_config_of,
    read_config,
    resolve_checkpoint,
)
from aiayn.data.tokenizer import Tokenizer
from aiayn.errors import InputError

__all__ = ["TRANSLATOR", "config_field", "device_of", "kind_of", "learn_tokenizer", "load_weights", "open_checkpoint",
           "text_tokenizer"]


def kind_of(path: str | Path) -> str:
    """The kind of model a checkpoint (or run directory) holds; translators' configs name none."""
    return read_config(resolve_checkpoint(path)).get("kind", TRANSLATOR)


def open_checkpoint(path: str | Path, kind: str, announce: bool = False) -> tuple[Path, dict[str, Any], Any]:
    """A checkpoint of `kind`: its directory, its config and its ModelConfig; CheckpointError else."""
    directory = resolve_checkpoint(path, announce=announce)
    config = read_config(directory)
    found = config.get("kind", TRANSLATOR)
    if found != kind:
        raise CheckpointError(f"{directory / 'config.json'}: a {found} checkpoint, not a {kind}")
    return directory, config, model_config_of(config, directory / "config.json")


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


def text_tokenizer(directory: Path, vocab_size: int) -> Tokenizer:
    tokenizer = load_tokenizer(directory / "tokenizer.model")
    if tokenizer.vocab_size != vocab_size:
        raise CheckpointError(f"{directory / 'tokenizer.model'}: {tokenizer.vocab_size} pieces, but "
                              f"{directory / 'config.json'} says vocab_size {vocab_size}")
    return tokenizer


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
