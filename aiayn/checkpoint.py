"""Checkpoints: a directory that maps raw text to raw text on its own.

    model.safetensors          weights (safetensors: loading never runs pickled code)
    config.json                {"model": ModelConfig, ...}
    tokenizer.model            the SentencePiece model (imported Marian models: source.spm,
                               target.spm and vocab.json instead, aiayn.data.marian_vocab)
    training_state.json        step, data position, ...      (training checkpoints only)
    training_state.safetensors optimizer moments, RNG states (training checkpoints only)

A checkpoint is written into a hidden sibling directory and renamed into place, so a process
killed at any moment leaves either the complete new checkpoint or none, and never touches the
previous one. A run directory keeps its checkpoints under `checkpoints/`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from aiayn.data.marian_vocab import AnyTokenizer, load_tokenizer_files, save_tokenizer_files
from aiayn.model import ModelConfig, Transformer

STEP_DIR = re.compile(r"^step_(\d+)$")
AVERAGE_DIR, BEST_DIR = "average", "best"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or corrupt; the message names the file."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_checkpoint(
    directory: Path, model: Transformer, tokenizer: AnyTokenizer, extra_config: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None, state_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary directory + rename) and return its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_model(model, str(partial / "model.safetensors"))  # writes a shared matrix once
    _write_json(partial / "config.json", {"model": model.config.to_dict(), **(extra_config or {})})
    save_tokenizer_files(tokenizer, partial)
    if state is not None:
        _write_json(partial / "training_state.json", state)
        save_file({k: v.contiguous() for k, v in (state_tensors or {}).items()}, str(partial / "training_state.safetensors"))
    for file in partial.iterdir():
        if file.suffix != ".json":
            _fsync_file(file)
    _fsync_dir(partial)
    if directory.exists():  # replacing (e.g. "best"): move the old one aside first, atomically
        old = directory.parent / f".{directory.name}.old-{os.getpid()}"
        directory.rename(old)
        partial.rename(directory)
        shutil.rmtree(old)
    else:
        partial.rename(directory)
    _fsync_dir(directory.parent)
    return directory


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: corrupt JSON ({error})") from None


def read_config(directory: Path) -> dict[str, Any]:
    return _read_json(Path(directory) / "config.json")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[Transformer, AnyTokenizer, dict[str, Any]]:
    """Model (in eval mode), tokenizer and config of a checkpoint directory or a run directory."""
    directory = resolve_checkpoint(path)
    config = read_config(directory)
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{directory / 'config.json'}: bad model config ({error})") from None
    model = Transformer(model_config)
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
    try:
        tokenizer = load_tokenizer_files(directory)
    except (OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{directory}: tokenizer missing or corrupt ({error})") from None
    return model.to(device).eval(), tokenizer, config


def load_training_state(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    state = _read_json(directory / "training_state.json")
    tensors_path = directory / "training_state.safetensors"
    try:
        return state, load_file(str(tensors_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{tensors_path}: missing or corrupt ({error})") from None


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The complete step checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def remove_partial_checkpoints(run_dir: Path) -> None:
    """Drop what a killed writer left behind (hidden .partial / .old directories)."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the last `keep` step checkpoints; each older one is renamed away before it is deleted,
    so a kill mid-delete never leaves a half-deleted directory under a checkpoint's name."""
    for old in step_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        doomed = old.parent / f".{old.name}.deleting"
        old.rename(doomed)
        shutil.rmtree(doomed)


def resolve_checkpoint(path: str | Path, announce: bool = False) -> Path:
    """A checkpoint directory as given, or for a run directory its averaged, best or last checkpoint
    (in that order of preference)."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    root = path / "checkpoints"
    for candidate in (root / AVERAGE_DIR, root / BEST_DIR, *reversed(step_checkpoints(path))):
        if candidate.is_dir():
            if announce:
                print(f"using checkpoint {candidate}", file=sys.stderr, flush=True)  # stdout may carry output
            return candidate
    raise CheckpointError(f"{path}: no checkpoint found (looked for checkpoints/{AVERAGE_DIR}, "
                          f"checkpoints/{BEST_DIR} and checkpoints/step_*)")


def average_checkpoints(paths: list[Path], out: Path) -> Path:
    """§6.1: a model whose weights are the mean of several checkpoints' weights."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    model, tokenizer, config = load_checkpoint(paths[0])
    total = {k: v.double().clone() for k, v in model.state_dict().items()}
    for path in paths[1:]:
        other, _, other_config = load_checkpoint(path)
        if other_config["model"] != config["model"]:
            raise CheckpointError(f"{path}: model config differs from {paths[0]}; cannot average")
        for k, v in other.state_dict().items():
            total[k] += v.double()
    model.load_state_dict({k: (v / len(paths)).to(model.state_dict()[k].dtype) for k, v in total.items()})
    extra = {k: v for k, v in config.items() if k != "model"}
    extra["averaged_from"] = [str(p) for p in paths]
    return save_checkpoint(out, model, tokenizer, extra)
