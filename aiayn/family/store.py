"""Checkpoints of the Transformer's descendants: the translator's layout (model.safetensors,
config.json, tokenizer.model), with config.json naming the `kind` and what the kind needs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import nn

from aiayn.checkpoint import CheckpointError, load_tokenizer, model_config_of, read_config, resolve_checkpoint
from aiayn.data.tokenizer import Tokenizer

TRANSLATOR = "translator"


def kind_of(path: str | Path) -> str:
    """The kind of model a checkpoint (or run directory) holds; translators' configs name none."""
    return read_config(resolve_checkpoint(path)).get("kind", TRANSLATOR)


def load_weights(model: nn.Module, directory: Path) -> nn.Module:
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, RuntimeError, OSError) as error:
        raise CheckpointError(f"{weights}: corrupt or does not fit the config ({error})") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights}: weights do not match the config "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return model.eval()


def open_checkpoint(path: str | Path, kind: str, announce: bool = False) -> tuple[Path, dict[str, Any], Any]:
    """A checkpoint of `kind`: its directory, its config and its ModelConfig; CheckpointError else."""
    directory = resolve_checkpoint(path, announce=announce)
    config = read_config(directory)
    found = config.get("kind", TRANSLATOR)
    if found != kind:
        raise CheckpointError(f"{directory / 'config.json'}: a {found} checkpoint, not a {kind}")
    return directory, config, model_config_of(config, directory / "config.json")


def text_tokenizer(directory: Path, vocab_size: int) -> Tokenizer:
    tokenizer = load_tokenizer(directory / "tokenizer.model")
    if tokenizer.vocab_size != vocab_size:
        raise CheckpointError(f"{directory / 'tokenizer.model'}: {tokenizer.vocab_size} pieces, but "
                              f"{directory / 'config.json'} says vocab_size {vocab_size}")
    return tokenizer


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
